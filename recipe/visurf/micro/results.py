"""Results of the micro reproduction: ``micro.json``, the table block of ``docs/RESULTS.md``, the curves.

``micro.json``::

    {"settings": {...}, "base": {"key", "heldout": {...}, "retention": {...}},
     "runs": [{"method", "seed", "steps", "rows_seen", "train_s", "eval_s",
               "heldout": {"acc", "acc_a", "acc_b", "acc_c", "format", "ll_a", ...},
               "retention": {"acc", "format", ...}, "curve": [{"step", ...held-out report}],
               "train_metrics": [{"step", "visurf/gt_signal_share", ...}]}, ...],
     "summary": {method: {"seeds": n, "<metric>": [mean, std], ...}}, "wall_s": ...}

``std`` is the sample standard deviation over seeds (``ddof=1``; 0 for a single seed).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

TABLE_START = "<!-- micro:table:start (written by recipe.visurf.micro.results; do not edit) -->"
TABLE_END = "<!-- micro:table:end -->"
SUMMARY_KEYS = ("acc", "acc_a", "acc_b", "acc_c", "format", "ll_a", "ll_b", "ll_c")
TRAIN_KEYS = (
    "critic/score/mean",
    "visurf/rollout_reward_mean",
    "visurf/rollout_accuracy_mean",
    "visurf/rollout_thinking_format_mean",
    "visurf/gt_reward_before_smoothing",
    "visurf/gt_reward_after_smoothing",
    "visurf/gt_advantage_mean",
    "visurf/gt_signal_share",
    "visurf/gt_inactive",
    "actor/pg_loss",
    "actor/grad_norm",
    "response_length/mean",
    "timing_s/step",
)
PNG_ACC = "micro_heldout_curves.png"
PNG_GT = "micro_gt_signal.png"


def config_dict(cfg) -> dict:
    """The run settings as plain JSON (tuples -> lists), with the base's cache key."""
    d = json.loads(json.dumps(asdict(cfg)))
    d["base_key"] = cfg.base.key()
    return d


def train_metrics(path: str | Path) -> list[dict]:
    """Per-step ``TRAIN_KEYS`` of a verl file-logger JSONL (``recipe.visurf.summary.read_metrics``)."""
    from recipe.visurf.summary import read_metrics

    rows = read_metrics(path)
    return [{"step": r["step"], **{k: float(r[k]) for k in TRAIN_KEYS if k in r}} for r in rows]


def mean_std(values: list[float]) -> list[float] | None:
    """``[mean, sample std]`` (std 0 for one value); None when empty."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return [round(m, 4), round(s, 4)]


def summarize(runs: list[dict]) -> dict:
    """Per method: seeds, mean/std of the held-out ``SUMMARY_KEYS``, retention accuracy, wall times."""
    out: dict[str, dict] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        ok = [r for r in runs if r["method"] == method and "failed" not in r]
        if not ok:
            continue
        s: dict = {"seeds": len(ok), "steps": ok[0]["steps"], "rows_seen": ok[0]["rows_seen"]}
        for k in SUMMARY_KEYS:
            ms = mean_std([r["heldout"].get(k) for r in ok])
            if ms is not None:
                s[k] = ms
        s["retention"] = mean_std([r["retention"]["acc"] for r in ok])
        s["train_s"] = mean_std([r["train_s"] for r in ok])
        out[method] = s
    return out


def _cell(ms) -> str:
    if ms is None:
        return "–"
    m, s = ms
    return f"{m:.2f}" if s == 0 else f"{m:.2f} ± {s:.2f}"


def markdown_table(base_eval: dict, summary: dict) -> str:
    """Held-out accuracy (overall, per part), format rate, retention, GT log-likelihood, seeds, train time."""
    head = ("| method | seeds | held-out acc | (a) known | (b) new concept | (c) non-object | format | retention "
            "| LL (a) | LL (b) | LL (c) | train s |")
    lines = [head, "|" + "---|" * 12]
    h, r = base_eval["heldout"], base_eval["retention"]
    lines.append(f"| base | – | {h['acc']:.2f} | {h.get('acc_a', 0):.2f} | {h.get('acc_b', 0):.2f} | "
                 f"{h.get('acc_c', 0):.2f} | {h['format']:.2f} | {r['acc']:.2f} | {h.get('ll_a', 0):.1f} | "
                 f"{h.get('ll_b', 0):.1f} | {h.get('ll_c', 0):.1f} | – |")
    for method, s in summary.items():
        ll = [f"{s[k][0]:.1f}" if k in s else "–" for k in ("ll_a", "ll_b", "ll_c")]
        lines.append(f"| {method} | {s['seeds']} | {_cell(s.get('acc'))} | {_cell(s.get('acc_a'))} | "
                     f"{_cell(s.get('acc_b'))} | {_cell(s.get('acc_c'))} | {_cell(s.get('format'))} | "
                     f"{_cell(s.get('retention'))} | {' | '.join(ll)} | {s['train_s'][0]:.0f} |")
    return "\n".join(lines)


def update_results_md(path: Path, block: str) -> None:
    """Replace the text between ``TABLE_START`` and ``TABLE_END`` in ``path`` (append both when absent)."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    new = f"{TABLE_START}\n{block}\n{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        pre, rest = text.split(TABLE_START, 1)
        post = rest.split(TABLE_END, 1)[1]
        text = pre + new + post
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    _atomic_write(path, text)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


ROLLOUT_REWARD = "rollout_reward"  # derived: the on-policy rows' mean reward


def point_value(point: dict, key: str) -> float | None:
    """``point[key]``; for ``ROLLOUT_REWARD`` the rollouts' mean reward: ``visurf/rollout_reward_mean``
    (ViSurf: without the GT rows), else ``critic/score/mean`` (GRPO: every row is a rollout)."""
    if key == ROLLOUT_REWARD:
        return point.get("visurf/rollout_reward_mean", point.get("critic/score/mean"))
    return point.get(key)


def _curves(runs: list[dict], method: str, key: str, field: str = "curve") -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over seeds of ``key`` along ``field`` (steps present in every seed)."""
    ok = [r for r in runs if r["method"] == method and "failed" not in r]
    per_step: dict[int, list[float]] = {}
    for r in ok:
        # sft_grpo's RL metrics count from its own first step: shift them behind the SFT half
        offset = r["steps"] // 2 if field == "train_metrics" and r.get("kind") == "sft_rl" else 0
        for p in r.get(field, []):
            v = point_value(p, key)
            if v is not None:
                per_step.setdefault(p["step"] + offset, []).append(v)
    steps = sorted(s for s, v in per_step.items() if len(v) == len(ok))
    ms = [mean_std(per_step[s]) for s in steps]
    return steps, [m for m, _ in ms], [s for _, s in ms]


def plot_curves(docs: Path, base_eval: dict, runs: list[dict]) -> list[Path]:
    """``PNG_ACC``: held-out accuracy (overall, a, b, c), format rate and mean GT log-likelihood per step
    and method (mean ± std over seeds, the base at step 0); ``PNG_GT``: per training step, the GT's
    signal share and advantage and the rollouts' accuracy reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in runs if "failed" not in r))
    color = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one colour per method in every panel
    main = {"sft", "grpo", "sft_grpo", "visurf"}
    style = {m: "-" if m in main else "--" for m in methods}
    docs.mkdir(parents=True, exist_ok=True)
    panels = [("acc", "held-out accuracy"), ("acc_a", "(a) known concept"), ("acc_b", "(b) new concept"),
              ("acc_c", "(c) non-object"), ("format", "format rate"), ("ll_b", "GT log-lik., (b) new concept"),
              ("ll_c", "GT log-lik., (c) non-object")]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, (key, title) in zip(axes.flat, panels):
        for m in methods:
            steps, mean, std = _curves(runs, m, key)
            if not steps:
                continue
            b = base_eval["heldout"].get(key)
            xs, ys, ss = ([0] + steps, [b] + mean, [0] + std) if b is not None else (steps, mean, std)
            ax.plot(xs, ys, style[m], color=color[m], marker="o", ms=3, label=m)
            ax.fill_between(xs, [y - s for y, s in zip(ys, ss)], [y + s for y, s in zip(ys, ss)], color=color[m],
                            alpha=0.12)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
    axes.flat[-1].axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].legend(handles, labels, loc="center")
    fig.suptitle("Micro reproduction: held-out target rows (mean ± std over seeds; step 0 = base)")
    fig.tight_layout()
    acc_png = docs / PNG_ACC
    fig.savefig(acc_png, dpi=80)
    plt.close(fig)

    gt_panels = [("visurf/gt_signal_share", "GT signal share (groups with |A_gt| > 1e-4)"),
                 ("visurf/gt_advantage_mean", "GT advantage (mean over groups)"),
                 (ROLLOUT_REWARD, "rollouts' mean reward (0-7)"),
                 ("visurf/rollout_thinking_format_mean", "rollouts' thinking-format reward")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 5))
    for ax, (key, title) in zip(axes, gt_panels):
        for m in methods:
            steps, mean, std = _curves(runs, m, key, field="train_metrics")
            if steps:
                ax.plot(steps, mean, style[m], color=color[m], marker="o", ms=2, label=m)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step (mean over seeds)")
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    gt_png = docs / PNG_GT
    fig.savefig(gt_png, dpi=80)
    plt.close(fig)
    return [acc_png, gt_png]


def write_all(results_path: Path, docs: Path, cfg, base_dir: Path, base_eval: dict, runs: list[dict],
              wall_s: float) -> dict:
    """Write ``micro.json``, the table block of ``<docs>/RESULTS.md`` and the curves; returns the JSON."""
    summary = summarize(runs)
    data = {"settings": config_dict(cfg), "base": {"dir": base_dir.name, **base_eval}, "runs": runs,
            "summary": summary, "wall_s": round(wall_s, 1)}
    _atomic_write(Path(results_path), json.dumps(data, indent=1))
    ok = [r for r in runs if "failed" not in r]
    if ok:
        plot_curves(Path(docs), base_eval, ok)
        failed = [f"{r['method']} s{r['seed']}" for r in runs if "failed" in r]
        block = markdown_table(base_eval, summary) + (f"\n\nFailed runs: {', '.join(failed)}" if failed else "")
        block += f"\n\nWall time so far: {wall_s / 60:.1f} min for {len(ok)} runs."
        update_results_md(Path(docs) / "RESULTS.md", block)
    return data
