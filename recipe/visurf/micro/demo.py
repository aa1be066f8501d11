"""The CPU main job (``examples/run_tiny_visurf_cpu.sh``): ViSurf vs GRPO from the cached base, before/after.

    python -m recipe.visurf.micro.demo [--out DIR] [--steps N] [verl overrides ...]

Builds (first use) or loads the cached base model (``micro.base``), writes the micro target task
(``micro.task``), trains through the real recipe on the same ordered rows for the same number of
steps (``micro.driver.train``; extra arguments are verl / Hydra overrides applied to every run):
GRPO (``visurf.enable=False``), ViSurf with the recipe's defaults (answer-only GT) and ViSurf with
the GT rendered in the policy's own response style (``visurf_gt_base_style``: the base answers
``<think>look.</think><answer>…</answer>``; docs/RESULTS.md shows why this matters at micro scale).
Evaluates base and the three runs on the held-out target rows and prints each ViSurf run's per-step
metrics table (``recipe.visurf.summary``) and the before/after table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from recipe.visurf.micro.driver import ROOT, MicroConfig, evaluate_run, prepare, train
from recipe.visurf.micro.task import ordered_train

SEED = 1
RUNS = (("grpo", "GRPO"), ("visurf", "ViSurf (default: answer-only GT)"),
        ("visurf_gt_base_style", "ViSurf (GT in the policy's style)"))


def before_after_table(rows: list[tuple[str, dict]]) -> str:
    """Fixed-width table: accuracy overall / (a) known / (b) new concept / (c) non-object, format rate,
    mean GT log-likelihood of (b) and (c), one line per model."""
    w = max(len(name) for name, _ in rows)
    head = f"{'model':<{w}} {'acc':>6} {'(a) known':>10} {'(b) new concept':>16} {'(c) non-object':>15} " \
           f"{'format':>7} {'LL (b)':>8} {'LL (c)':>8}"
    lines = [head, "-" * len(head)]
    for name, h in rows:
        lines.append(f"{name:<{w}} {h['acc']:>6.2f} {h.get('acc_a', 0):>10.2f} {h.get('acc_b', 0):>16.2f} "
                     f"{h.get('acc_c', 0):>15.2f} {h['format']:>7.2f} {h.get('ll_b', 0):>8.1f} {h.get('ll_c', 0):>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "tiny_visurf_cpu"))
    p.add_argument("--steps", type=int, default=32, help="optimizer steps per method (default 32)")
    p.add_argument("overrides", nargs="*", help="verl / Hydra overrides for both runs (key=value)")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"arguments must be verl overrides key=value, got {bad}")
    cfg = replace(MicroConfig(), steps=args.steps, eval_every=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:5.0f}s] {msg}", flush=True)

    base, files, base_eval = prepare(cfg, out, log)
    log(f"base model: {base}")
    rows = ordered_train(files.train_pool, out / "data" / f"train_seed{SEED}_{cfg.steps}x{cfg.batch}.parquet",
                         cfg.steps, cfg.batch, SEED)
    results = {}
    for method, _ in RUNS:
        work = out / "runs" / method
        if work.exists():
            import shutil

            shutil.rmtree(work)
        work.mkdir(parents=True)
        log(f"training {method} through verl on CPU: {cfg.steps} steps, G={cfg.n}, {cfg.batch} prompts/step "
            f"(log: {work / 'train.log'})")
        t1 = time.time()
        ckpts, metrics = train(cfg, method, SEED, base, rows, files.heldout, work, log,
                               extra=tuple(args.overrides))
        log(f"{method}: trained in {time.time() - t1:.0f}s; evaluating on {base_eval['heldout']['n']} held-out rows")
        results[method] = evaluate_run(ckpts[-1:], files.heldout, files.retention, cfg.base.think, work)
        results[method]["metrics"] = str(metrics)
    (out / "before_after.json").write_text(json.dumps({"base": base_eval, **results}, indent=1))
    from recipe.visurf.summary import format_table, read_metrics

    for method, title in RUNS[1:]:
        print(f"\n{title}, per step (verl metrics):")
        print(format_table(read_metrics(results[method]["metrics"])))
    print(f"\nHeld-out target rows ({base_eval['heldout']['n']}; (a) known concept, (b) new concept "
          f"'purple', (c) non-object -> []), greedy, before and after {cfg.steps} steps:")
    print(before_after_table([("base", base_eval["heldout"])] + [(t, results[m]["heldout"]) for m, t in RUNS]))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
