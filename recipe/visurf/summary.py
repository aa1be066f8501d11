"""Per-step table of a run's metrics from verl's ``file`` logger (``trainer.logger=[...,file]``).

    python -m recipe.visurf.summary METRICS.jsonl [--columns visurf/gt_advantage_mean ...]

verl's file logger writes one JSON line per step: ``{"step": N, "data": {metric: value}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_COLUMNS = (
    ("critic/score/mean", "reward (all)"),
    ("visurf/rollout_reward_mean", "reward (rollouts)"),
    ("visurf/rollout_accuracy_mean", "acc (rollouts)"),
    ("visurf/gt_reward_before_smoothing", "r_gt raw"),
    ("visurf/gt_reward_after_smoothing", "r_gt smoothed"),
    ("visurf/gt_advantage_mean", "A_gt"),
    ("visurf/gt_signal_share", "GT signal"),
    ("visurf/gt_injected", "GT rows"),
    ("visurf/gt_skipped_too_long", "GT too long"),
    ("actor/pg_loss", "pg_loss"),
    ("actor/grad_norm", "grad_norm"),
    ("timing_s/step", "step s"),
)


def read_metrics(path: str | Path) -> list[dict]:
    """Rows ``{"step": N, **metrics}`` of a verl file-logger JSONL, last entry per step wins."""
    by_step: dict[int, dict] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                by_step[int(entry["step"])] = {"step": int(entry["step"]), **entry["data"]}
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a verl file-logger line ({e})") from None
    return [by_step[s] for s in sorted(by_step)]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns=DEFAULT_COLUMNS) -> str:
    """A fixed-width text table: one line per step, one column per metric present in ``rows``."""
    present = [(key, title) for key, title in columns if any(key in r for r in rows)]
    header = ["step"] + [title for _, title in present]
    body = [[str(r["step"])] + [_fmt(r.get(key)) for key, _ in present] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m recipe.visurf.summary outputs/tiny/metrics.jsonl",
    )
    parser.add_argument("metrics", help="JSONL written by verl's file logger (VERL_FILE_LOGGER_PATH)")
    parser.add_argument("--columns", nargs="*", help="metric keys to show (default: the ViSurf set)")
    args = parser.parse_args(argv)
    rows = read_metrics(args.metrics)
    if not rows:
        print(f"{args.metrics}: no steps logged", file=sys.stderr)
        return 1
    columns = [(c, c) for c in args.columns] if args.columns else DEFAULT_COLUMNS
    print(format_table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
