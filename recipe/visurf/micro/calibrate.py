"""How often the micro base solves each part, and part (d) per relation: the check behind ``BaseSpec``.

    python -m recipe.visurf.micro.calibrate                      # the default base (BaseSpec)
    python -m recipe.visurf.micro.calibrate --odds 0.9 0.6 0.3 0.15 --steps 500   # another setting

Part (d) (reasoning) must be a partial skill of the base: solved ``D_BAND`` = 20-50 % of the time at
temperature 1, so that RL's rollouts find the answer in some groups and not in others, and greedily
right for some relations only, so that there is something to sharpen. ``BaseSpec.reason_skill`` (the
odds that a relational training example reasons, per relation) and ``BaseSpec.steps`` decide it, but not
in a way one can compute: the ~1M-parameter base does not learn the odds it is shown (docs/RESULTS.md
"Base model": at 650 steps it reasoned greedily on every relation, at 800 on one). So a setting is
checked by measurement: this builds (or reuses from the cache) the base of the given setting and
reports, on ``--rows`` fresh ``grid_target`` rows (seed ``CALIBRATION_SEED``, none of the task's seeds,
a quarter per part):

* greedy accuracy per part (``evaluation.evaluate_model``: the evaluation CLI, strict rules), and for
  part (d) the correct rows per relation (``by_relation``);
* the share of correct temperature-1 samples per part (``evaluation.sampled_accuracy``, ``--samples``
  per row), and whether part (d)'s lies inside ``D_BAND``.

Writes ``<out>/calibration.json`` (and the greedy predictions under ``<out>/greedy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

from recipe.visurf.micro.base import BaseSpec, build_base

D_BAND = (0.2, 0.5)  # part (d): the share of the base's temperature-1 samples that solve it (issue 17)
CALIBRATION_SEED = 301  # grid_target seed of the calibration rows (the task uses 100-103)


def by_relation(records: list[dict], questions: dict[str, str]) -> dict[str, list[int]]:
    """``{relation: [correct, rows]}`` over the part-(d) records (``id``, ``ground_truth``,
    ``response``) under the strict rules; ``questions`` maps a row id to its question."""
    from recipe.visurf.eval_scoring import score_record
    from recipe.visurf.micro.evaluation import strict_protocol
    from recipe.visurf.micro.task import part_of
    from recipe.visurf.micro.thinks import parse_query

    protocol = strict_protocol()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in records:
        if part_of(rec["id"]) != "d":
            continue
        relation = parse_query(questions[rec["id"]])[2]
        counts[relation][0] += bool(score_record(rec, protocol).correct)
        counts[relation][1] += 1
    return dict(sorted(counts.items()))


def in_band(share: float, band: tuple[float, float] = D_BAND) -> bool:
    """``band[0] <= share <= band[1]``."""
    return band[0] <= share <= band[1]


def calibrate(spec: BaseSpec, out: str | Path, *, rows: int = 384, samples: int = 2,
              cache: str | Path | None = None, log=print) -> dict:
    """Build (or reuse) the base of ``spec`` and measure it on ``rows`` calibration rows (module docstring)."""
    from data_prep.synthetic import generate
    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.micro.evaluation import evaluate_model, sampled_accuracy
    from verl_ext.atomic_io import write_text_atomically

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = build_base(spec, cache, log=log)
    data = out / f"calibration_{rows}_seed{CALIBRATION_SEED}.parquet"
    if not data.is_file():
        generate("grid_target", rows, CALIBRATION_SEED, str(data), image_size=spec.image_size)
    greedy = evaluate_model(base, data, out / "greedy" / base.name, loglik=False)
    questions = {r["id"]: r["extra_info"]["question"] for r in iter_rows([str(data)])}
    with open(out / "greedy" / base.name / "predictions.jsonl") as f:
        relations = by_relation([json.loads(line) for line in f], questions)
    sampled = sampled_accuracy(base, data, k=samples, seed=0)
    report = {"base": base.name, "spec": asdict(spec), "rows": rows, "seed": CALIBRATION_SEED,
              "samples": samples, "greedy": greedy, "greedy_d_by_relation": relations, "sampled": sampled,
              "band": list(D_BAND), "d_in_band": in_band(sampled["sampled_d"])}
    write_text_atomically(out / "calibration.json", json.dumps(report, indent=1))
    return report


def summary_lines(report: dict) -> list[str]:
    """The report as the lines ``main`` prints."""
    spec, g, s = report["spec"], report["greedy"], report["sampled"]
    odds = ", ".join(f"{rel} {p:g}" for rel, p in spec["reason_skill"])
    parts = "abcd"
    return [
        f"{report['base']}: reason odds {odds}; {spec['steps']} steps",
        f"calibration rows: {report['rows']} grid_target rows (seed {report['seed']}), a quarter per part",
        "greedy: " + " ".join(f"({p}) {g[f'acc_{p}']:.2f}" for p in parts)
        + "; (d) by relation: " + ", ".join(f"{rel} {k}/{n}" for rel, (k, n) in report["greedy_d_by_relation"].items()),
        f"temperature 1 ({report['samples']} samples per row): "
        + " ".join(f"({p}) {s[f'sampled_{p}']:.2f}" for p in parts),
        f"part (d) sampled {s['sampled_d']:.2f}: "
        + ("inside" if report["d_in_band"] else "OUTSIDE")
        + f" the {report['band'][0]:.0%}-{report['band'][1]:.0%} band",
    ]


def main(argv: list[str] | None = None) -> int:
    relations = [rel for rel, _ in BaseSpec().reason_skill]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--odds", nargs=len(relations), type=float, metavar="P",
                   help=f"reason odds per relation, in the order {', '.join(relations)} (default: BaseSpec's)")
    p.add_argument("--steps", type=int, default=None, help="base SFT steps (default: BaseSpec's)")
    p.add_argument("--rows", type=int, default=384, help="calibration rows (a quarter per part; default 384)")
    p.add_argument("--samples", type=int, default=2, help="temperature-1 samples per row (default 2)")
    p.add_argument("--cache", default=None,
                   help="base cache root (default $VISURF_MICRO_CACHE or ~/.cache/visurf/micro)")
    p.add_argument("--out", default="outputs/micro_calibration",
                   help="work directory (default outputs/micro_calibration)")
    args = p.parse_args(argv)
    if args.odds and not all(0.0 <= x <= 1.0 for x in args.odds):
        p.error(f"--odds must be probabilities in [0, 1], got {args.odds}")
    if args.rows < 4 or args.samples < 1:
        p.error(f"--rows must be >= 4 and --samples >= 1, got {args.rows} and {args.samples}")
    spec = BaseSpec()
    if args.odds:
        spec = replace(spec, reason_skill=tuple(zip(relations, args.odds)))
    if args.steps is not None:
        spec = replace(spec, steps=args.steps)
    for line in summary_lines(calibrate(spec, args.out, rows=args.rows, samples=args.samples, cache=args.cache)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
