"""The CPU main job (``examples/run_tiny_visurf_cpu.sh``): SFT, GRPO and ViSurf from the cached base, before/after.

    python -m recipe.visurf.micro.demo [--out DIR] [--steps N] [--jobs N] [verl overrides ...]

Builds (first use) or loads the cached base model (``micro.base``: thinks about the image when asked
to, answers directly when asked to), writes the micro target task (``micro.task``), trains each of
``RUNS`` through the real recipe on the same ordered rows for the same number of steps at its lr
(``LRS``; ``micro.driver.train``; extra arguments are verl / Hydra overrides applied to the RL runs),
evaluates base and runs on the test rows (greedy; per part: (a) known, (b) new concept, (c)
non-object, (d) reasoning) and prints ViSurf's per-step metrics table (``recipe.visurf.summary``) and
the before/after table. Deterministic: the data, the base, the training order and the evaluation are
seeded; the rollouts' sampling is seeded by the CPU rollout (issue 17, item 1), per request and
independent of which requests share a generation batch — so training ``--jobs`` runs side by side
(each its own ray instance and processes) changes the wall time, not a number of the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from recipe.visurf.micro.driver import METHODS, ROOT, MicroConfig, by_cost, prepare, train
from recipe.visurf.micro.evaluation import evaluate_model
from recipe.visurf.micro.task import ordered_train
from verl_ext.atomic_io import write_text_atomically

SEED = 1
RUNS = (("sft", "SFT (verl SFT trainer)"), ("grpo", "GRPO"), ("visurf", "ViSurf (paper defaults)"))
# Each method's lr: the full micro run's choice on validation rows (docs/results/micro.json "chosen_lr",
# lr grid 1e-4 / 3e-4 / 1e-3, seed 1, this base; tests/test_demo.py keeps the two equal).
LRS = {"sft": 1e-3, "grpo": 3e-4, "visurf": 1e-3}


def before_after_table(rows: list[tuple[str, dict]]) -> str:
    """Fixed-width table: accuracy overall / per part (a) known, (b) new concept, (c) non-object,
    (d) reasoning, format rate, mean GT log-likelihood of (b) and (d), one line per model."""
    w = max(len(name) for name, _ in rows)
    head = f"{'model':<{w}} {'acc':>6} {'(a) known':>10} {'(b) new':>8} {'(c) none':>9} {'(d) reason':>11} " \
           f"{'format':>7} {'LL (b)':>8} {'LL (d)':>8}"
    lines = [head, "-" * len(head)]
    for name, h in rows:
        lines.append(f"{name:<{w}} {h['acc']:>6.2f} {h.get('acc_a', 0):>10.2f} {h.get('acc_b', 0):>8.2f} "
                     f"{h.get('acc_c', 0):>9.2f} {h.get('acc_d', 0):>11.2f} {h['format']:>7.2f} "
                     f"{h.get('ll_b', 0):>8.1f} {h.get('ll_d', 0):>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "tiny_visurf_cpu"))
    p.add_argument("--steps", type=int, default=32, help="optimizer steps per method (default 32)")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs trained side by side (default 2: one run keeps about one core busy); 1: one after another")
    p.add_argument("overrides", nargs="*", help="verl / Hydra overrides for the RL runs (key=value)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"arguments must be verl overrides key=value, got {bad}")
    cfg = replace(MicroConfig(), steps=args.steps, eval_every=args.steps)
    out = Path(args.out).resolve()  # the trainers run in the run's directory: relative paths would break
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:5.0f}s] {msg}", flush=True)

    base, files, base_eval = prepare(cfg, out, log, full=False)
    log(f"base model: {base}")
    rows = ordered_train(files.train_pool, out / "data" / f"train_seed{SEED}_{cfg.steps}x{cfg.batch}.parquet",
                         cfg.steps, cfg.batch, SEED)
    def run(method: str) -> dict:
        work = out / "runs" / method
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log(f"training {method} through verl on CPU: {cfg.steps} steps, lr {LRS[method]:g}, G={cfg.n}, "
            f"{cfg.batch} prompts/step (log: {work / 'train.log'})")
        t1 = time.time()
        ckpts, metrics, _ = train(cfg, method, SEED, LRS[method], base, rows, files.val, work, log,
                                  extra=tuple(args.overrides) if METHODS[method][0] != "sft" else ())
        log(f"{method}: trained in {time.time() - t1:.0f}s; evaluating on {base_eval['test']['n']} test rows")
        return {"test": evaluate_model(ckpts[-1][1], files.test, work / "eval_test"),
                "metrics": str(metrics) if metrics else None}

    # One run keeps about one of the two cores busy (trainer, rollout server and reward workers take
    # turns), so runs go side by side; each is seeded and batch-invariant, so the table does not depend
    # on --jobs (see the module docstring).
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {method: pool.submit(run, method) for method in by_cost([m for m, _ in RUNS])}
        results = {method: futures[method].result() for method, _ in RUNS}
    write_text_atomically(out / "before_after.json", json.dumps({"base": base_eval, **results}, indent=1))
    from recipe.visurf.summary import format_table, read_metrics

    print("\nViSurf, per step (verl metrics):")
    print(format_table(read_metrics(results["visurf"]["metrics"])))
    print(f"\nTest rows ({base_eval['test']['n']}; (a) known concept, (b) new concept 'purple', (c) non-object "
          f"-> [], (d) reasoning: 'the shape right of the green circle'), greedy, before and after {cfg.steps} steps:")
    print(before_after_table([("base", base_eval["test"])] + [(t, results[m]["test"]) for m, t in RUNS]))
    g = base_eval["style_gap"]
    print(f"\nBase: log-likelihood of a known answer under the thinking prompt: with its think block "
          f"{g['ll_think']:.1f}, answer-only {g['ll_answer_only']:.1f} (gap {g['gap']:.1f} nats).")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
