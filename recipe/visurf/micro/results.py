"""Results of the micro reproduction: ``micro.json``, the table block of ``docs/RESULTS.md``, the curves.

``micro.json``::

    {"settings": {...}, "commit": "<git HEAD>", "wall_s": ..., "complete": bool,
     "base": {"dir", "val": {...}, "test": {...}, "retention": {...}, "style_gap": {...}, "sampled_val": {...}},
     "runs": [{"method", "seed", "lr", "steps", "rows_seen", "train_s", "eval_s",
               "curve": [{"step", ...validation report}], "val_final", "best_step",
               "test": {"step", "acc", "acc_a", ..., "acc_d", "format", "ll_a", ...}, "test_best": {...},
               "retention": {"acc", ...}, "train_metrics": [{"step", ...}], "sft_loss": [{"step", "loss"}]}, ...],
     "lr_grid": {method: {lr: {"best_val_acc", "final_val_acc", "best_step"}}}, "chosen_lr": {method: lr},
     "summary": {method: {"lr", "seeds", "test": {key: [mean, std]}, "test_best": {...}, ...}},
     "paired": {baseline: {"test" | "test_best": {key: {"mean", "std", "n", "per_seed"}}}},
     "gt_styles": {style: {reference: {"test" | "test_best": {...as paired}}}},
     "invocations": [{"argv", "commit", "wall_s", "runs"}]}

``std`` is the sample standard deviation over seeds (``ddof=1``; 0 for a single seed). A summary row
holds the runs at the method's chosen lr (ablations: ViSurf's); a method whose lr grid is not finished
yet is summarised per lr (``method@lr``). ``paired``: ViSurf minus the baseline, seed by seed (the
same seed = the same training rows in the same order), at the chosen lrs. ``gt_styles``: issue 18's GT
styles (``GT_STYLES``) minus the paper's template GT (``visurf``) and minus the best baseline (the main
baseline with the highest mean test accuracy at its chosen lr), seed by seed, the same way.
``invocations``: each driver invocation whose runs the file holds (a later ``--only`` invocation on the
same work directory adds its runs to the report instead of replacing it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from verl_ext.atomic_io import save_figure_atomically, write_text_atomically

TABLE_START = "<!-- micro:table:start (written by recipe.visurf.micro.results; do not edit) -->"
TABLE_END = "<!-- micro:table:end -->"
PARTS = ("a", "b", "c", "d")
SUMMARY_KEYS = ("acc", *(f"acc_{p}" for p in PARTS), "format", *(f"ll_{p}" for p in PARTS))
PAIRED_KEYS = ("acc", *(f"acc_{p}" for p in PARTS), "format")
MAIN_METHODS = ("sft", "grpo", "sft_grpo", "visurf")
BASELINES = ("sft", "grpo", "sft_grpo")
GT_STYLES = ("visurf_rollout_think", "visurf_answer_tokens")  # issue 18's GT styles, against the paper's template
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


def sft_loss(path: str | Path) -> list[dict]:
    """Per-step ``train/loss`` of verl's SFT trainer (its file-logger JSONL): ``[{"step", "loss"}]``."""
    from recipe.visurf.summary import read_metrics

    return [{"step": r["step"], "loss": float(r["train/loss"])} for r in read_metrics(path) if "train/loss" in r]


def mean_std(values: list[float]) -> list[float] | None:
    """``[mean, sample std]`` (std 0 for one value); None when empty."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return [round(m, 4), round(s, 4)]


def lr_of(method: str, chosen: dict) -> float | None:
    """The lr a method is reported at: its own chosen lr (main methods) or ViSurf's (ablations)."""
    return chosen.get(method if method in MAIN_METHODS else "visurf")


def reported_groups(runs: list[dict], chosen: dict) -> dict[str, list[dict]]:
    """Finished runs grouped for the summary: ``method`` -> runs at ``lr_of``; a method without a chosen lr
    -> ``method@lr`` per lr."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        if "failed" in r:
            continue
        lr = lr_of(r["method"], chosen)
        if lr is None:
            out.setdefault(f"{r['method']}@{r['lr']:.0e}", []).append(r)
        elif r["lr"] == lr:
            out.setdefault(r["method"], []).append(r)
    return out


def summarize(runs: list[dict], chosen: dict) -> dict:
    """Per reported group (``reported_groups``): lr, seeds, mean/std of the test ``SUMMARY_KEYS`` at the
    final step and at the best validation checkpoint, the best step, retention accuracy, wall times."""
    out: dict[str, dict] = {}
    for name, ok in reported_groups(runs, chosen).items():
        s: dict = {"method": ok[0]["method"], "lr": ok[0]["lr"], "seeds": len(ok), "steps": ok[0]["steps"],
                   "rows_seen": ok[0]["rows_seen"]}
        for which in ("test", "test_best"):
            s[which] = {k: ms for k in SUMMARY_KEYS if (ms := mean_std([r[which].get(k) for r in ok])) is not None}
        s["best_step"] = [r["best_step"] for r in ok]
        s["retention"] = mean_std([r["retention"]["acc"] for r in ok])
        s["train_s"] = mean_std([r["train_s"] for r in ok])
        s["eval_s"] = mean_std([r["eval_s"] for r in ok])
        out[name] = s
    return out


def paired_differences(runs: list[dict], chosen: dict, method: str = "visurf",
                       baselines: tuple[str, ...] = ("sft", "grpo", "sft_grpo")) -> dict:
    """``{baseline: {"test" | "test_best": {key: {"mean", "std", "n", "per_seed"}}}}``: ``method`` minus
    ``baseline`` on the seeds both finished at their reported lrs (``lr_of``), key by key (``PAIRED_KEYS``,
    plus ``retention`` for ``test``); ``std`` over seeds as ``mean_std``."""
    groups = reported_groups(runs, chosen)
    mine = {r["seed"]: r for r in groups.get(method, [])}
    out: dict[str, dict] = {}
    for b in baselines:
        theirs = {r["seed"]: r for r in groups.get(b, [])}
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        entry: dict[str, dict] = {}
        for which in ("test", "test_best"):
            d: dict[str, dict] = {}
            keys = PAIRED_KEYS + (("retention",) if which == "test" else ())
            for k in keys:
                get = (lambda r: r["retention"]["acc"]) if k == "retention" else (lambda r, k=k: r[which].get(k))
                diffs = [get(mine[s]) - get(theirs[s]) for s in seeds if get(mine[s]) is not None and get(theirs[s]) is not None]
                if diffs:
                    m, sd = mean_std(diffs)
                    d[k] = {"mean": m, "std": sd, "n": len(diffs), "per_seed": [round(x, 4) for x in diffs]}
            entry[which] = d
        out[b] = entry
    return out


def best_baseline(summary: dict) -> str | None:
    """The baseline (``BASELINES``, summarised at its chosen lr) with the highest mean test accuracy at the
    final step; ties -> the first in ``BASELINES``."""
    have = [b for b in BASELINES if b in summary and "acc" in summary[b]["test"]]
    return max(have, key=lambda b: (summary[b]["test"]["acc"][0], -BASELINES.index(b))) if have else None


def gt_style_differences(runs: list[dict], chosen: dict, summary: dict) -> dict:
    """``{style: {reference: paired entry}}``: each of ``GT_STYLES`` minus the template GT (``visurf``) and
    minus ``best_baseline``, seed by seed (``paired_differences``)."""
    best = best_baseline(summary)
    refs = ("visurf",) + ((best,) if best else ())
    out = {}
    for style in GT_STYLES:
        d = paired_differences(runs, chosen, method=style, baselines=refs)
        if d:
            out[style] = d
    return out


def _cell(ms) -> str:
    if ms is None:
        return "–"
    m, s = ms
    return f"{m:.2f}" if s == 0 else f"{m:.2f} ± {s:.2f}"


def _diff_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    return f"{d['mean']:+.2f} ± {d['std']:.2f}" if d["n"] > 1 else f"{d['mean']:+.2f}"


def _paired_rows(label: str, entries: dict) -> list[str]:
    rows = []
    for b, e in entries.items():
        t, tb = e.get("test", {}), e.get("test_best", {})
        n = t.get("acc", {}).get("n", 0)
        rows.append(f"| {label}{b} | {n} | {_diff_cell(t.get('acc'))} | "
                    + " | ".join(_diff_cell(t.get(f"acc_{p}")) for p in PARTS)
                    + f" | {_diff_cell(t.get('format'))} | {_diff_cell(t.get('retention'))} | {_diff_cell(tb.get('acc'))} |")
    return rows


def markdown_table(base_eval: dict, summary: dict, grid: dict | None = None, chosen: dict | None = None,
                   paired: dict | None = None, gt_paired: dict | None = None) -> str:
    """Test accuracy (overall, per part) at the final step, format, retention, GT log-likelihood; the same
    at the best validation checkpoint; the lr grid's validation scores; ViSurf's paired differences; the
    GT styles' paired differences."""
    parts = " | ".join(f"({p})" for p in PARTS)
    head = f"| method | lr | seeds | test acc | {parts} | format | retention | LL (b) | LL (c) | LL (d) | train s |"
    lines = ["Test rows, **final step**:", "", head, "|" + "---|" * (head.count("|") - 1)]
    h, r = base_eval["test"], base_eval["retention"]
    lines.append(f"| base | – | – | {h['acc']:.2f} | " + " | ".join(f"{h.get(f'acc_{p}', 0):.2f}" for p in PARTS)
                 + f" | {h['format']:.2f} | {r['acc']:.2f} | "
                 + " | ".join(f"{h.get(f'll_{p}', 0):.1f}" for p in "bcd") + " | – |")
    for name, s in summary.items():
        t = s["test"]
        ll = [f"{t[f'll_{p}'][0]:.1f}" if f"ll_{p}" in t else "–" for p in "bcd"]
        lines.append(f"| {name} | {s['lr']:.0e} | {s['seeds']} | {_cell(t.get('acc'))} | "
                     + " | ".join(_cell(t.get(f"acc_{p}")) for p in PARTS)
                     + f" | {_cell(t.get('format'))} | {_cell(s.get('retention'))} | {' | '.join(ll)} | "
                     f"{s['train_s'][0]:.0f} |")
    head = f"| method | best step(s) | test acc | {parts} | format |"
    lines += ["", "Test rows, **best validation checkpoint** of each run:", "", head,
              "|" + "---|" * (head.count("|") - 1)]
    for name, s in summary.items():
        t = s["test_best"]
        lines.append(f"| {name} | {', '.join(map(str, s['best_step']))} | {_cell(t.get('acc'))} | "
                     + " | ".join(_cell(t.get(f"acc_{p}")) for p in PARTS) + f" | {_cell(t.get('format'))} |")
    if grid:
        lrs = sorted({lr for g in grid.values() for lr in g}, key=float)
        head = "| method | " + " | ".join(f"lr {lr}" for lr in lrs) + " | chosen |"
        lines += ["", "lr grid, **validation** accuracy (best checkpoint / final step), one seed:", "", head,
                  "|" + "---|" * (head.count("|") - 1)]
        for m, g in grid.items():
            cells = [f"{g[lr]['best_val_acc']:.2f} / {g[lr]['final_val_acc']:.2f}" if lr in g else "–" for lr in lrs]
            c = (chosen or {}).get(m)
            lines.append(f"| {m} | {' | '.join(cells)} | {f'{c:.0e}' if c else '–'} |")
    if paired:
        head = f"| ViSurf − | seeds | test acc | {parts} | format | retention | test acc (best-val ckpt) |"
        lines += ["", "Paired differences, ViSurf minus baseline, seed by seed (mean ± std over seeds):", "", head,
                  "|" + "---|" * (head.count("|") - 1)]
        lines += _paired_rows("", paired)
    if gt_paired:
        head = f"| GT style − reference | seeds | test acc | {parts} | format | retention | test acc (best-val ckpt) |"
        lines += ["", "GT styles (issue 18) minus the paper's template GT (`visurf`) and minus the best baseline, "
                  "seed by seed (mean ± std over seeds):", "", head, "|" + "---|" * (head.count("|") - 1)]
        for style, e in gt_paired.items():
            lines += _paired_rows(f"{style} − ", e)
    g, sv = base_eval.get("style_gap"), base_eval.get("sampled_val")
    if g:
        lines += ["", f"Base: log-likelihood of a known answer under the thinking prompt (retention rows): with "
                  f"its think block {g['ll_think']:.1f}, answer-only {g['ll_answer_only']:.1f} (gap {g['gap']:.1f} nats)."
                  + (" Share of correct temperature-1 samples on validation rows: "
                     + ", ".join(f"({k.split('_')[1]}) {v:.2f}" for k, v in sv.items()) + "." if sv else "")]
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
    write_text_atomically(path, text)


ROLLOUT_REWARD = "rollout_reward"  # derived: the on-policy rows' mean reward


def point_value(point: dict, key: str) -> float | None:
    """``point[key]``; for ``ROLLOUT_REWARD`` the rollouts' mean reward: ``visurf/rollout_reward_mean``
    (ViSurf: without the GT rows), else ``critic/score/mean`` (GRPO: every row is a rollout)."""
    if key == ROLLOUT_REWARD:
        return point.get("visurf/rollout_reward_mean", point.get("critic/score/mean"))
    return point.get(key)


def _curves(runs: list[dict], key: str, field: str = "curve") -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over ``runs`` (one group's seeds) of ``key`` along ``field`` (steps present in
    every run)."""
    ok = runs
    per_step: dict[int, list[float]] = {}
    for r in ok:
        # sft_grpo's RL metrics count from its own first step: shift them behind the SFT half
        offset = r["steps"] // 2 if field == "train_metrics" and r.get("kind") == "sft_rl" else 0
        for p in r.get(field, []):
            v = p.get("loss") if field == "sft_loss" else point_value(p, key)
            if v is not None:
                per_step.setdefault(p["step"] + offset, []).append(v)
    steps = sorted(s for s, v in per_step.items() if len(v) == len(ok))
    ms = [mean_std(per_step[s]) for s in steps]
    return steps, [m for m, _ in ms], [s for _, s in ms]


def plot_curves(docs: Path, base_eval: dict, groups: dict[str, list[dict]]) -> list[Path]:
    """``PNG_ACC``: validation accuracy (overall, a, b, c, d), format rate and mean GT log-likelihood per
    step and reported group (``reported_groups``; mean ± std over seeds, the base at step 0); ``PNG_GT``:
    per training step, the GT's signal share and advantage, the rollouts' reward and thinking format,
    and SFT's training loss (verl's SFT trainer: does it plateau within the budget?)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(groups)
    color = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one colour per method in every panel
    style = {m: "-" if groups[m][0]["method"] in MAIN_METHODS else "--" for m in methods}
    docs.mkdir(parents=True, exist_ok=True)
    panels = [("acc", "validation accuracy"), ("acc_a", "(a) known concept"), ("acc_b", "(b) new concept"),
              ("acc_c", "(c) non-object"), ("acc_d", "(d) reasoning"), ("format", "format rate"),
              ("ll_b", "GT log-lik., (b) new concept"), ("ll_d", "GT log-lik., (d) reasoning")]
    fig, axes = plt.subplots(3, 3, figsize=(16, 12))
    for ax, (key, title) in zip(axes.flat, panels):
        for m in methods:
            steps, mean, std = _curves(groups[m], key)
            if not steps:
                continue
            b = base_eval["val"].get(key)
            xs, ys, ss = ([0] + steps, [b] + mean, [0] + std) if b is not None else (steps, mean, std)
            ax.plot(xs, ys, style[m], color=color[m], marker="o", ms=3, label=m)
            ax.fill_between(xs, [y - s for y, s in zip(ys, ss)], [y + s for y, s in zip(ys, ss)], color=color[m],
                            alpha=0.12)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
    axes.flat[-1].axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].legend(handles, labels, loc="center")
    fig.suptitle("Micro reproduction: validation target rows (mean ± std over seeds; step 0 = base)")
    fig.tight_layout()
    acc_png = docs / PNG_ACC
    save_figure_atomically(fig, acc_png, dpi=80)
    plt.close(fig)

    gt_panels = [("visurf/gt_signal_share", "GT signal share (groups with |A_gt| > 1e-4)"),
                 ("visurf/gt_advantage_mean", "GT advantage (mean over groups)"),
                 (ROLLOUT_REWARD, "rollouts' mean reward (0-7)"),
                 ("visurf/rollout_thinking_format_mean", "rollouts' thinking-format reward"),
                 ("loss", "SFT train loss per token (verl SFT trainer)")]
    fig, axes = plt.subplots(1, 5, figsize=(22, 5))
    for ax, (key, title) in zip(axes, gt_panels):
        for m in methods:
            steps, mean, std = _curves(groups[m], key, field="sft_loss" if key == "loss" else "train_metrics")
            if steps:
                ax.plot(steps, mean, style[m], color=color[m], marker="o", ms=2, label=m)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step (mean over seeds)")
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    gt_png = docs / PNG_GT
    save_figure_atomically(fig, gt_png, dpi=80)
    plt.close(fig)
    return [acc_png, gt_png]


def write_all(results_path: Path, docs: Path, cfg, base_dir: Path, base_eval: dict, runs: list[dict],
              grid: dict, chosen: dict, wall_s: float, commit: str, complete: bool = False,
              invocations: list[dict] | None = None, argv: list[str] | None = None,
              steal_share: float | None = None) -> dict:
    """Write ``micro.json``, the table block of ``<docs>/RESULTS.md`` and the curves; returns the JSON.
    ``wall_s`` / ``commit`` / ``argv``: this invocation's; ``steal_share``: the share of the machine's CPU
    time the hypervisor gave to others while it ran (``driver.cpu_steal``; a wall time is comparable only
    with its steal share); ``invocations``: earlier invocations whose runs ``runs`` still holds
    (``driver.prior_invocations``), listed before this one."""
    summary = summarize(runs, chosen)
    paired = paired_differences(runs, chosen)
    gt_paired = gt_style_differences(runs, chosen, summary)
    ok = [r for r in runs if "failed" not in r]
    calls = [*(invocations or []), {"argv": list(argv or []), "commit": commit, "wall_s": round(wall_s, 1),
                                    "runs": len(ok), "complete": complete, "cpu_steal_share": steal_share}]
    data = {"settings": config_dict(cfg), "commit": commit, "wall_s": round(wall_s, 1), "complete": complete,
            "base": {"dir": base_dir.name, **base_eval}, "runs": runs, "lr_grid": grid,
            "chosen_lr": {m: lr for m, lr in chosen.items()}, "summary": summary, "paired": paired,
            "gt_styles": gt_paired, "invocations": calls}
    write_text_atomically(Path(results_path), json.dumps(data, indent=1))
    if ok:
        plot_curves(Path(docs), base_eval, reported_groups(runs, chosen))
        failed = [f"{r['method']} lr {r['lr']:.0e} s{r['seed']}" for r in runs if "failed" in r]
        block = markdown_table(base_eval, summary, grid, chosen, paired, gt_paired)
        block += f"\n\nFailed runs: {', '.join(failed)}" if failed else ""
        block += "\n\nWall time: " + " + ".join(
            f"{c['wall_s'] / 60:.1f} min (`reproduce_micro.sh{' ' + ' '.join(c['argv']) if c['argv'] else ''}`, "
            f"{c['runs']} runs reported, commit {c['commit'][:12]}"
            + (f", CPU steal {c['cpu_steal_share']:.0%}" if c.get("cpu_steal_share") is not None else "")
            + f"{'' if c['complete'] else '; not complete'})"
            for c in calls) + "."
        update_results_md(Path(docs) / "RESULTS.md", block)
    return data
