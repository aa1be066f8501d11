"""Evaluate a checkpoint (or any system's predictions) with the paper's metrics, scored by the
public evaluation protocols.

Three CLI modes (see ``recipe/visurf/EVALUATION.md``):

* generate: greedy decoding over data_prep parquet files, then scoring::

      python -m recipe.visurf.evaluate --model CKPT_OR_HF_DIR --data val.parquet [more.parquet] \
          --out eval/run1 [--backend hf|vllm] [--batch-size 8] [--limit 500] [--max-new-tokens 2048] \
          [--prompt-style visurf|visionreasoner]

* score-only: score a JSONL of ``{id, data_source, ground_truth, response}`` lines (plus
  optional ``gt_mask`` PNG path / COCO RLE, ``choices``, ``image``, ``n_tokens``,
  ``question_type`` / ``answer_type`` / ``precision``)::

      python -m recipe.visurf.evaluate --predictions preds.jsonl --out eval/other_system

* compare: side-by-side table of several runs' ``metrics.json``::

      python -m recipe.visurf.evaluate --compare eval/visurf eval/grpo eval/sft

Scoring options (``report.md`` and ``metrics.json`` name the preset and the rule of every
metric): ``--protocol project|visionreasoner`` picks a preset (``project``, the default: the
project's answer reader with the public metric arithmetic and the training reward's math rule;
``visionreasoner``: the public VisionReasoner evaluation end to end); ``--answer-reader
project|visionreasoner``, ``--non-object-rule public|strict``, ``--bbox-acc-strict``,
``--math-protocol mathverify|mathvista|visionreasoner`` override single choices of the preset;
``--segmenter none|sam2``.

Coordinates (``verl_ext.coords``): metrics are computed in the labels' 840-frame pixels whatever the
model's convention, so runs of different families on the same data compare. ``--coords abs840|rel1000``
names the convention of the model's answers; without it, generate mode detects it from the model's
``config.json`` (Qwen2.5-VL ``abs840``, Qwen3-VL / Qwen3.5 ``rel1000``) and score-only mode reads each
line's ``coords`` key (written by generate mode for a non-default convention), else ``abs840``. Generate
mode stops on a row whose prompt was prepared for another convention (``extra_info.coords``, data_prep
``--coords``), as training's start-up check does.

Programmatic use — ``evaluate()`` takes parquet paths (or a predictions JSONL) and a model path
and returns the report as a dict::

    from recipe.visurf.evaluate import evaluate
    report = evaluate(["held_out.parquet"], "checkpoints/run/global_step_50", "eval/step50",
                      max_new_tokens=256, group_by=lambda rec: rec["id"].split("-")[1])
    report["metrics"]["overall"]["BboxAcc"], report["metrics"]["overall"]["format"]
    report["groups"]["a"]["BboxAcc"]            # per group_by value (here: the id's part letter)
    report["protocol"]                         # rule name -> the public script it follows

``report["metrics"]`` is ``{data_source: {...}, ..., "overall": {...}}`` (keys in EVALUATION.md:
``n, gIoU, cIoU, N-Acc, T-Acc, BboxAcc, Acc, AUC, format, resp_len, think_len``);
``report["groups"]`` the same per ``group_by(record)`` value (records mapped to None are left
out); ``report["out_dir"]`` where ``predictions.jsonl`` (resumable), ``metrics.json``,
``report.md``, ``metrics.png`` and ``samples.png`` were written (``write=False`` writes only
the predictions).

Where things live: scoring rules ``verl_ext/eval_protocols/`` (one module per public script),
shared geometry ``verl_ext/metrics.py``, record scoring + aggregation
``recipe/visurf/eval_scoring.py``, prompts / checkpoints / HF and vLLM generation
``recipe/visurf/eval_backends.py``; this module: orchestration, report and CLI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recipe.visurf import eval_backends as B
from recipe.visurf import eval_scoring as S
from verl_ext import coords as C
from verl_ext import metrics as M
from verl_ext.atomic_io import save_figure_atomically, write_text_atomically
from verl_ext.constants import FRAME, build_prompt, task_of
from verl_ext.eval_protocols import MATH_PROTOCOLS, NON_OBJECT_RULES, PRESETS, EvalProtocol, preset
from verl_ext.eval_protocols.answers import ANSWER_READERS

logger = logging.getLogger("visurf.evaluate")

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.md"
BARS_PNG = "metrics.png"
SAMPLES_PNG = "samples.png"
PROTOCOL_KEY = "protocol"  # metrics.json: the scoring rules, beside the per-data_source entries
TABLE_KEYS = ("n", *M.METRIC_KEYS, "resp_tokens")  # the columns of metrics_table / compare_table, in order
SAMPLE_GRID = 8  # images in samples.png
PREDICTION_KEYS = ("id", "data_source", "ground_truth", "response")


# ============================================================================================
# Predictions: read / generate (resumable)
# ============================================================================================
def read_predictions(path: Path, *, resumable: bool = False) -> list[dict]:
    """The prediction lines of ``path`` (UTF-8, a leading BOM allowed; blank lines skipped).

    Every problem raises ValueError naming ``path:line``: a line that is not JSON or not UTF-8, a
    record without ``PREDICTION_KEYS``, two lines with the same ``(data_source, id)``. A missing
    file raises FileNotFoundError. ``resumable=True`` reads this tool's own output
    (``generate_predictions``): a missing file is an empty one, and a last line that does not parse
    is what an interrupted run leaves and is dropped with a warning; a user's file
    (``--predictions``, ``resumable=False``) must be whole."""
    path = Path(path)
    if not path.is_file():
        if resumable and not path.exists():
            return []
        raise FileNotFoundError(f"{path}: no such predictions file" if not path.exists() else
                                f"{path}: not a file (a predictions JSONL is expected)")
    lines = path.read_bytes().split(b"\n")
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM (some editors write one)
        lines[0] = lines[0][3:]
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    seen: dict[tuple[str, str], int] = {}
    for k, raw in enumerate(lines):
        where = f"{path}:{k + 1}"
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if resumable and k == len(lines) - 1:
                logger.warning("%s: dropping a truncated last line (interrupted run)", where)
                continue
            raise ValueError(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                             "write the file as UTF-8") from None
        except json.JSONDecodeError as e:
            if resumable and k == len(lines) - 1:
                logger.warning("%s: dropping a truncated last line (interrupted run)", where)
                continue
            raise ValueError(f"{where}: not a JSON line ({e.msg}, column {e.colno})") from None
        missing = [key for key in PREDICTION_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{where}: prediction lines need {', '.join(PREDICTION_KEYS)}; missing {missing}")
        key = B.sample_key(record)
        if key in seen:
            raise ValueError(f"{where}: duplicate sample (data_source={key[0]!r}, id={key[1]!r}), "
                             f"first on line {seen[key]}")
        seen[key] = k + 1
        out.append(record)
    return out


def write_predictions(path: Path, records: Sequence[dict]) -> Path:
    """``records`` as JSON lines into ``path``, atomically (the old file or the whole new one)."""
    return write_text_atomically(path, "".join(json.dumps(r) + "\n" for r in records))


def restyle_prompt(row: dict, style: str, coords: str = C.DEFAULT_COORDS) -> dict:
    """``row`` with its prompt rebuilt in prompt style ``style`` for the coordinate convention ``coords``
    (``verl_ext.constants.build_prompt``) from ``extra_info.question``, as data_prep writes it with
    ``--prompt-style`` / ``--coords``."""
    question = (row.get("extra_info") or {}).get("question")
    if question is None:
        raise ValueError(f"--prompt-style {style}: row {row['id']!r} ({row['data_source']}) has no "
                         "extra_info.question to rebuild its prompt from; re-run data_prep with --prompt-style")
    row["prompt"] = [{"role": "user", "content": build_prompt(task_of(row["data_source"]), str(question), style,
                                                              coords)}]
    return row


def check_row_coords(row: dict, coords: str) -> None:
    """ValueError when an object-task row's prompt was prepared for another coordinate convention
    (``extra_info.coords``, missing = ``abs840``) than the model's ``coords``, naming the row and the fixes."""
    if task_of(row["data_source"]) == "math":
        return
    try:
        declared = C.declared_coords(row.get("extra_info"))
    except ValueError as e:
        raise ValueError(f"row {row['id']!r} ({row['data_source']}): {e}") from None
    if declared != coords:
        raise ValueError(
            f"row {row['id']!r} ({row['data_source']}) was prepared for {declared} coordinates (extra_info.coords), "
            f"the model answers in {coords}: its prompt asks for the other convention. Re-run data_prep with "
            f"--coords {coords}, or pass --coords {declared} if this model answers in {declared}")


def model_convention(model_dir: Path, setting: str | None) -> str:
    """The coordinate convention of the evaluated model: ``setting`` (``--coords``) when given, else the
    family's (``verl_ext.coords.resolve_coords`` on the model directory; an unknown family: ``abs840``,
    warned)."""
    coords, how = C.resolve_coords(setting or C.AUTO, model_dir)
    logger.info("coordinates: %s (%s)", coords, how.replace("visurf.coords", "--coords"))
    return coords


def generate_predictions(data: Sequence[str], model: str, out_dir: Path, *, backend: str = "hf",
                         batch_size: int = 8, limit: int | None = None, max_new_tokens: int = 2048,
                         device: str | None = None, tensor_parallel_size: int = 1,
                         prompt_style: str | None = None,
                         coords: str | None = None) -> tuple[list[dict], dict[tuple[str, str], Any], str]:
    """Generate the missing predictions into ``out_dir/predictions.jsonl``; returns (records, images
    by ``(data_source, id)``, the model's coordinate convention). ``prompt_style``: rebuild every prompt
    in that style (None: the parquet's prompts as written); recorded in each line, a resumed run must use
    the same. ``coords``: the model's convention (None: detected, ``model_convention``); without
    ``prompt_style`` every row's prompt must have been prepared for it (``check_row_coords``); a
    convention other than ``abs840`` is recorded in each line (``coords``), a resumed run must have the
    same. The model is resolved (a verl
    checkpoint merged) only when a row is left to generate; otherwise the convention is ``coords`` or the
    lines'."""
    from tqdm import tqdm

    pred_path = out_dir / PREDICTIONS
    done = read_predictions(pred_path, resumable=True)
    styles = {r.get("prompt_style") for r in done}
    if done and styles != {prompt_style}:
        raise ValueError(f"{pred_path}: predictions were generated with prompt style(s) {sorted(map(str, styles))}, "
                         f"this run asks for {prompt_style}; use another --out")
    if done:  # without a possibly truncated last line before appending; atomic, so an interrupt keeps them
        write_predictions(pred_path, done)
    done_keys = {B.sample_key(r) for r in done}
    rows = list(B.iter_rows(data, limit))
    todo = [r for r in rows if B.sample_key(r) not in done_keys]
    done_coords = {S.record_coords(r) for r in done}
    model_dir = None
    if todo:  # the model is resolved (an FSDP checkpoint merged) only when there is something to generate
        model_dir = B.resolve_model_dir(model, out_dir)
        coords = model_convention(model_dir, coords)
    elif coords is None:  # everything generated already: the lines say in which convention
        coords = next(iter(done_coords)) if len(done_coords) == 1 else C.DEFAULT_COORDS
    if done and done_coords != {coords}:
        raise ValueError(f"{pred_path}: predictions were generated in coordinates {sorted(done_coords)}, "
                         f"this run's model answers in {coords}; use another --out")
    if prompt_style is None:  # the parquet's prompts: they must ask for the model's convention
        for row in rows:
            check_row_coords(row, coords)
    else:  # rebuilt from the question for the model's convention, whatever the file was prepared for
        rows = [restyle_prompt(r, prompt_style, coords) for r in rows]
        todo = [r for r in rows if B.sample_key(r) not in done_keys]
    logger.info("%d rows, %d already in %s, %d to generate", len(rows), len(rows) - len(todo), pred_path, len(todo))
    if todo:
        logger.info("loading %s (%s backend)", model_dir, backend)
        if backend == "vllm":
            gen = B.VLLMGenerator(model_dir, max_new_tokens, tensor_parallel_size)
        else:
            gen = B.HFGenerator(model_dir, max_new_tokens, device)
        with open(pred_path, "a", encoding="utf-8") as f:
            for start in tqdm(range(0, len(todo), batch_size), desc="generating", unit="batch"):
                batch = todo[start:start + batch_size]
                for row, (text, n_tok) in zip(batch, gen.generate(batch)):
                    line = {**B.row_record(row), "response": text, "n_tokens": n_tok}
                    if prompt_style is not None:
                        line["prompt_style"] = prompt_style
                    if coords != C.DEFAULT_COORDS:  # the paper's lines stay as they were
                        line["coords"] = coords
                    f.write(json.dumps(line) + "\n")
                f.flush()
    wanted = {B.sample_key(r) for r in rows}
    records = [r for r in read_predictions(pred_path, resumable=True) if B.sample_key(r) in wanted]
    images = {B.sample_key(row): row["images"][0] for row in rows if row.get("images")}  # {bytes}, decoded lazily
    return records, images, coords


# ============================================================================================
# Programmatic entry point
# ============================================================================================
def evaluate(data: Sequence[str] | None = None, model: str | None = None, out: str | Path | None = None, *,
             predictions: str | Path | None = None, backend: str = "hf", batch_size: int = 8,
             limit: int | None = None, max_new_tokens: int = 2048, device: str | None = None,
             tensor_parallel_size: int = 1, prompt_style: str | None = None,
             protocol: EvalProtocol | str | None = None, segmenter: str | S.Segmenter | None = None,
             segmenter_model: str | None = None, group_by: Callable[[dict], str | None] | None = None,
             write: bool = True, coords: str | None = None) -> dict:
    """Generate (``data`` + ``model``) or read (``predictions``) predictions, score them, write the
    outputs into ``out`` and return the report dict (module docstring). ``protocol``: an
    ``EvalProtocol`` or a preset name (``verl_ext.eval_protocols.PRESETS``); default ``project``.
    ``coords``: the convention of the model's answers (``verl_ext.coords``; None: detected from the model
    in generate mode, each line's ``coords`` key else ``abs840`` in score-only mode); metrics are in
    frame pixels either way."""
    if out is None:
        raise ValueError("evaluate() needs out= (the predictions are written there, resumably)")
    if (predictions is None) == (model is None):
        raise ValueError("evaluate() needs either model= with data= (generate) or predictions= (score-only)")
    if model is not None and not data:
        raise ValueError("evaluate(model=...) needs data=[parquet, ...]")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    protocol = preset(protocol) if isinstance(protocol, str) else (protocol or EvalProtocol())
    if coords is not None:
        C.check_coords(coords, "--coords")
    seg = S.make_segmenter(segmenter, segmenter_model) if isinstance(segmenter, str | None) else segmenter
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model is not None:
        records, images, coords = generate_predictions(
            data, model, out_dir, backend=backend, batch_size=batch_size, limit=limit, max_new_tokens=max_new_tokens,
            device=device, tensor_parallel_size=tensor_parallel_size, prompt_style=prompt_style, coords=coords)
        base_dir, source = None, f"{model} on {', '.join(map(str, data))}"
    else:
        pred_path = Path(predictions)
        records, images, base_dir, source = read_predictions(pred_path), {}, pred_path.parent, str(pred_path)
        if not records:
            raise ValueError(f"{pred_path}: no predictions")
        if coords is not None:  # an explicit --coords must agree with lines that name their convention
            clash = next((r for r in records if r.get("coords") not in (None, coords)), None)
            if clash is not None:
                raise ValueError(f"{pred_path}: sample {clash['id']!r} ({clash['data_source']}) says coords "
                                 f"{clash['coords']!r}, --coords says {coords!r}")
        if pred_path.resolve() != (out_dir / PREDICTIONS).resolve():
            write_predictions(out_dir / PREDICTIONS, records)
    metrics, scored = S.score_all(records, protocol, segmenter=seg, images=images, base_dir=base_dir,
                                  coords=coords or C.DEFAULT_COORDS)
    groups = S.aggregate_by(scored, group_by) if group_by is not None else {}
    described = describe_protocol(protocol, prompt_style, seg, coords_text(records, coords))
    if write:
        write_outputs(out_dir, metrics, scored, source=source, protocol=described, groups=groups, images=images,
                      base_dir=base_dir)
    report = {"metrics": metrics, "protocol": described, "out_dir": str(out_dir), "n": len(scored)}
    if group_by is not None:
        report["groups"] = groups
    return report


def coords_text(records: Sequence[dict], coords: str | None) -> str:
    """The answers' coordinate conventions, as the report names them: one (``abs840``) or a count per
    convention (``mixed: abs840 3, rel1000 5``), each line's ``record_coords``."""
    counts: dict[str, int] = {}
    for record in records:
        c = S.record_coords(record, coords or C.DEFAULT_COORDS)
        counts[c] = counts.get(c, 0) + 1
    if len(counts) <= 1:
        return next(iter(counts), coords or C.DEFAULT_COORDS)
    return "mixed: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def describe_protocol(protocol: EvalProtocol, prompt_style: str | None, segmenter: S.Segmenter | None,
                      coords: str = C.DEFAULT_COORDS) -> dict:
    """The scoring rules of a run (``metrics.json["protocol"]``, printed in ``report.md``); ``coords``:
    the convention the answers were read in (metrics in 840-frame pixels either way)."""
    return {
        "options": {"preset": protocol.preset, **protocol.options(),
                    "prompt_style": prompt_style or "as in the parquet",
                    "segmenter": segmenter.name if segmenter else "none",
                    "coords": coords},
        "rules": protocol.describe(),
    }


# ============================================================================================
# Report: metrics.json, report.md, plots, compare table
# ============================================================================================
def _fmt(key: str, value) -> str:
    if value is None:
        return "–"
    if key in M.FRACTION_KEYS:
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _sources(metrics: dict) -> list[str]:
    """The per-data_source (+ overall) entries of a metrics dict / metrics.json."""
    return [k for k in metrics if k != PROTOCOL_KEY]


def metrics_table(metrics: dict, first: str = "data_source") -> str:
    """Markdown table: one row per data_source (+ overall), fractions as percentages."""
    rows = _sources(metrics)
    present = {k for r in rows for k in metrics[r]}
    cols = [k for k in TABLE_KEYS if k in present]
    head = [first, "task", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in rows:
        m = metrics[name]
        lines.append("| " + " | ".join([name, m.get("task", "mixed" if name == "overall" else "–")]
                                      + [_fmt(c, m.get(c)) for c in cols]) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, metrics: dict, source: str, protocol: dict, groups: dict | None = None) -> None:
    iou_lines = sorted({f"- `{ds}`: {m['iou_on']}" for ds, m in metrics.items() if "iou_on" in m and ds != "overall"})
    notes = [f"- `{ds}`: {n}" for ds, m in metrics.items() if ds != "overall" for n in m.get("notes", [])]
    opts = protocol["options"]
    text = [
        "# ViSurf evaluation report",
        "",
        f"- source: `{source}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- samples: {metrics.get('overall', {}).get('n', 0)}",
        f"- protocol: preset `{opts.get('preset', 'custom')}` (answer reader `{opts.get('reader', 'project')}`, "
        f"non-object rule `{opts['non_object']}`, BboxAcc `{opts['bbox_acc']}`, math `{opts['math']}`); "
        f"prompt style: {opts['prompt_style']}; segmenter: {opts['segmenter']}",
        "",
        "Fractions in percent. gIoU = mean per-sample IoU (non-object sample: 1 iff the answer says 'no target'); "
        "cIoU = Σ intersection / Σ union; N-Acc = non-object samples answered 'no target'; T-Acc = targeted "
        "samples answered with boxes; BboxAcc, Acc (GUI click / anomaly decision / math answer), AUC (anomaly): "
        "see the rules below; format = thinking format + well-formed answer; resp_len / think_len = mean words. "
        "`overall` pools all samples (Acc over the accuracy-scored tasks).",
        "",
        metrics_table(metrics),
    ]
    if groups:
        text += ["", "Per group:", "", metrics_table(groups, first="group")]
    text += [
        "",
        "Scoring rules (public script each follows):",
        "",
        *[f"- {name}: {rule}" for name, rule in protocol["rules"].items()],
        "",
        "IoU basis (per data_source): `boxes` = union of the predicted boxes vs union of the GT boxes, rasterised "
        f"on the {FRAME}x{FRAME} frame (inclusive pixels); `masks` = predicted boxes rasterised at the GT mask's "
        "resolution vs the GT mask; `masks (sam2)` = the segmenter's mask vs the GT mask (the public scripts' basis). "
        "Without a segmenter the raster of the boxes stands in for the public SAM2 masks"
        + ("; as in the public SAM2 step, boxes read without points make no mask." if opts.get("reader") ==
           "visionreasoner" else "."),
        "",
        *(iou_lines or ["- no box-scored data_source"]),
    ]
    if notes:
        text += ["", "Notes:", *notes]
    text += ["", f"![metrics]({BARS_PNG})", "", f"![samples]({SAMPLES_PNG})", ""]
    write_text_atomically(out_dir / REPORT, "\n".join(text))


def plot_bars(out_dir: Path, metrics: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = _sources(metrics)
    keys = [k for k in M.FRACTION_KEYS if any(metrics[s].get(k) is not None for s in sources)]
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 1.3 * len(sources)), 4))
    width = 0.8 / max(1, len(keys))
    x = np.arange(len(sources))
    for i, k in enumerate(keys):
        vals = [metrics[s].get(k) for s in sources]
        ax.bar(x + i * width, [100 * v if v is not None else 0 for v in vals], width, label=k)
    ax.set_xticks(x + width * (len(keys) - 1) / 2, sources, rotation=20, ha="right")
    ax.set_ylim(0, 118)  # headroom for the legend
    ax.set_ylabel("%")
    ax.set_title("metrics per data_source")
    if keys:
        ax.legend(ncol=min(4, len(keys)), fontsize=8)
    fig.tight_layout()
    path = save_figure_atomically(fig, out_dir / BARS_PNG, dpi=100)
    plt.close(fig)
    return path


def plot_samples(out_dir: Path, scored: Sequence[S.Scored], images: dict | None = None,
                 base_dir: Path | None = None, k: int = SAMPLE_GRID) -> Path:
    """Grid of samples: GT boxes/points green, predicted red (on the image when available)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images = images or {}
    spatial = [s for s in scored if s.task != "math"]
    chosen = (spatial or list(scored))[:k]
    cols = min(4, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, chosen):
        spec = images.get(B.sample_key(s.record)) or s.record.get("image")
        img = None
        if spec is not None:
            try:
                img = S.open_image(spec, base_dir)
            except (OSError, ValueError) as e:
                logger.warning("sample %s: cannot open image (%s)", s.record["id"], e)
        if img is not None:
            ax.imshow(img, extent=(0, FRAME, FRAME, 0))
        else:
            ax.imshow(np.full((8, 8, 3), 0.85), extent=(0, FRAME, FRAME, 0))
        for b in M.as_boxes(s.gt_boxes):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=2))
        for b in M.as_boxes(s.parsed.boxes):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1.5, ls="--"))
        for pts, style in ((s.gt_points, dict(c="lime", marker="o")), (s.parsed.points, dict(c="red", marker="x"))):
            p = np.asarray(pts, dtype=float).reshape(-1, 2)
            if len(p):
                ax.scatter(p[:, 0], p[:, 1], s=30, **style)
        ax.set_xlim(0, FRAME)
        ax.set_ylim(FRAME, 0)
        if s.task == "math":
            verdict = f"answer {s.parsed.answer!r:.20} vs {s.record['ground_truth']!r:.12}"
        elif s.iou is not None:
            verdict = f"IoU {s.iou:.2f} {'hit' if s.correct else 'miss'}"
        else:
            verdict = "hit" if s.correct else "miss"
        ax.set_title(f"{str(s.record['id'])[:24]}\n{s.record['data_source']}: {verdict}", fontsize=8)
    fig.suptitle("green: ground truth, red: prediction", fontsize=9)
    fig.tight_layout()
    path = save_figure_atomically(fig, out_dir / SAMPLES_PNG, dpi=80)
    plt.close(fig)
    return path


def write_outputs(out_dir: Path, metrics: dict, scored: Sequence[S.Scored], *, source: str, protocol: dict,
                  groups: dict | None = None, images: dict | None = None, base_dir: Path | None = None) -> None:
    """``metrics.json`` (per data_source + overall + ``protocol``; ``groups`` when given), ``report.md``, plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**metrics, PROTOCOL_KEY: protocol}
    write_text_atomically(out_dir / METRICS, json.dumps(payload, indent=2) + "\n")
    if groups:
        write_text_atomically(out_dir / "groups.json", json.dumps(groups, indent=2) + "\n")
    write_report(out_dir, metrics, source, protocol, groups)
    plot_bars(out_dir, metrics)
    plot_samples(out_dir, scored, images, base_dir)


def compare_table(dirs: Sequence[str]) -> str:
    """Side-by-side table: rows = (data_source, metric), one column per run; then the scoring
    options of each run (runs scored under different rules are not comparable)."""
    runs = {}
    for d in dirs:
        path = Path(d) / METRICS
        if not path.is_file():
            raise FileNotFoundError(f"--compare: {path} not found (run an evaluation into {d} first)")
        runs[Path(d).name or d] = json.loads(path.read_text())
    names = list(runs)
    sources = list(dict.fromkeys(ds for m in runs.values() for ds in _sources(m) if ds != "overall")) + ["overall"]
    head = ["data_source", "metric", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in sources:
        keys = [k for k in TABLE_KEYS if any(k in runs[r].get(ds, {}) for r in names)]
        for k in keys:
            lines.append("| " + " | ".join([ds, k] + [_fmt(k, runs[r].get(ds, {}).get(k)) for r in names]) + " |")
    options = {r: (runs[r].get(PROTOCOL_KEY) or {}).get("options", {}) for r in names}
    for opt in dict.fromkeys(o for v in options.values() for o in v):
        lines.append("| protocol | " + opt + " | " + " | ".join(str(options[r].get(opt, "–")) for r in names) + " |")
    return "\n".join(lines)


# ============================================================================================
# CLI
# ============================================================================================
EPILOG = """examples:
  # generate with a verl checkpoint (FSDP shards are merged once into OUT/merged_model) and score
  python -m recipe.visurf.evaluate --model checkpoints/visurf/global_step_200 --backend vllm --out eval/visurf \\
      --data data/refcoco_val.parquet data/refcoco+_val.parquet data/grefcoco_val.parquet
  # a released ViSurf checkpoint (a local HF dir, e.g. a download of Ricky06662/Visurf-7B-Best-on-gRefCOCO)
  # with the prompt it was trained on and its math scoring
  python -m recipe.visurf.evaluate --model models/Visurf-7B --data data/mathvista_testmini.parquet \\
      --out eval/released --prompt-style visionreasoner --math-protocol visionreasoner
  # the public VisionReasoner evaluation end to end (its answer reader, arithmetic and math rule)
  python -m recipe.visurf.evaluate --model models/Visurf-7B --data data/grefcoco_val.parquet \
      --out eval/released_public --prompt-style visionreasoner --protocol visionreasoner
  # CPU smoke test with the tiny model
  python -m verl_ext.tiny --out /tmp/tiny
  python -m data_prep.synthetic --task grounding --n 8 --seed 0 --out /tmp/g.parquet
  python -m recipe.visurf.evaluate --model /tmp/tiny --data /tmp/g.parquet --out /tmp/eval --max-new-tokens 32
  # score another system's outputs
  python -m recipe.visurf.evaluate --predictions preds.jsonl --out eval/baseline
  # compare runs
  python -m recipe.visurf.evaluate --compare eval/visurf eval/grpo eval/sft
"""


def build_parser() -> argparse.ArgumentParser:
    from verl_ext.constants import PROMPT_STYLES

    p = argparse.ArgumentParser(prog="python -m recipe.visurf.evaluate", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--model", help="HF model dir or verl checkpoint (root, global_step_N, or its actor/)")
    mode.add_argument("--predictions", help="score-only: JSONL of {id, data_source, ground_truth, response}")
    mode.add_argument("--compare", nargs="+", metavar="DIR", help="print a side-by-side table of several runs")
    p.add_argument("--data", nargs="+", help="data_prep parquet file(s) (generate mode)")
    p.add_argument("--out", help="output directory")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="generation backend (default: hf)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (default: 8)")
    p.add_argument("--limit", type=int, default=None, help="at most N rows per data file")
    p.add_argument("--max-new-tokens", type=int, default=2048, help="greedy decoding budget (default: 2048)")
    p.add_argument("--device", default=None, help="hf backend device (default: cuda if available, else cpu)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend tensor parallelism")
    p.add_argument("--prompt-style", choices=tuple(PROMPT_STYLES), default=None,
                   help="rebuild every prompt in this style (verl_ext.constants.PROMPT_STYLES) from "
                        "extra_info.question (default: the parquet's prompts as data_prep wrote them)")
    p.add_argument("--protocol", choices=tuple(PRESETS), default="project",
                   help="scoring preset: project (default: the project's answer reader, the public metric "
                        "arithmetic, the training reward's math rule) or visionreasoner (the public VisionReasoner "
                        "evaluation: its answer reader, arithmetic and math rule; EVALUATION.md). The options "
                        "below override single choices of the preset")
    p.add_argument("--answer-reader", choices=ANSWER_READERS, default=None,
                   help="how boxes / points are read: project (the training reward's parser) or visionreasoner "
                        "(the public extract_bbox_points_think) (default: the preset's)")
    p.add_argument("--non-object-rule", choices=NON_OBJECT_RULES, default=None,
                   help="public (both presets): an answer with no readable box says 'no target', as the public "
                        "scripts; strict: only a well-formed [] does")
    p.add_argument("--bbox-acc-strict", action="store_true",
                   help="BboxAcc: every GT box matched one-to-one, no extra boxes (default: VisionReasoner's rule)")
    p.add_argument("--math-protocol", choices=MATH_PROTOCOLS, default=None,
                   help="mathverify (preset project: the training reward's rule), mathvista (MathVista "
                        "calculate_score.py), visionreasoner (preset visionreasoner: VisionReasoner "
                        "evaluation_math.py + calculate_math_acc.py)")
    p.add_argument("--group-id-regex", default=None,
                   help="also report metrics per group: the first capture group of this regex searched in each id "
                        "(ids without a match are left out), e.g. 'grid_target-(\\w+)-'")
    p.add_argument("--segmenter", choices=("none", "sam2"), default="none",
                   help="turn predicted boxes into masks for samples with a GT mask (sam2: optional, GPU)")
    p.add_argument("--segmenter-model", default=None, help="segmenter checkpoint id (sam2: facebook/sam2-hiera-large)")
    p.add_argument("--coords", choices=C.COORDS, default=None,
                   help="coordinate convention of the model's answers (verl_ext/coords.py): abs840 (Qwen2.5-VL, the "
                        "paper's) or rel1000 (Qwen3-VL / Qwen3.5); default: detected from --model's config.json, "
                        "for --predictions each line's `coords` key, else abs840. Metrics are in 840-frame pixels "
                        "either way")
    return p


def _id_grouper(pattern: str) -> Callable[[dict], str | None]:
    rx = re.compile(pattern)
    if rx.groups < 1:
        raise ValueError(f"--group-id-regex {pattern!r} needs a capture group")

    def group(record: dict) -> str | None:
        m = rx.search(str(record["id"]))
        return m.group(1) if m else None

    return group


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        print(compare_table(args.compare))
        return 0
    if not args.out:
        parser.error("--out is required with --model / --predictions")
    if args.model and not args.data:
        parser.error("--model needs --data FILE.parquet [...]")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    protocol = preset(args.protocol, reader=args.answer_reader, non_object=args.non_object_rule,
                      bbox_acc="strict" if args.bbox_acc_strict else None, math=args.math_protocol)
    report = evaluate(args.data, args.model, args.out, predictions=args.predictions, backend=args.backend,
                      batch_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens,
                      device=args.device, tensor_parallel_size=args.tensor_parallel_size,
                      prompt_style=args.prompt_style, protocol=protocol, segmenter=args.segmenter,
                      segmenter_model=args.segmenter_model, coords=args.coords,
                      group_by=_id_grouper(args.group_id_regex) if args.group_id_regex else None)
    out_dir = Path(report["out_dir"])
    opts = report["protocol"]["options"]
    print(f"protocol preset: {opts['preset']} (answer reader {opts['reader']}, non-object rule {opts['non_object']}, "
          f"BboxAcc {opts['bbox_acc']}, math {opts['math']}; segmenter {opts['segmenter']}; "
          f"coordinates {opts['coords']})")
    print(metrics_table(report["metrics"]))
    if report.get("groups"):
        print("\n" + metrics_table(report["groups"], first="group"))
    print(f"\nwrote {out_dir / METRICS}, {out_dir / REPORT}, {out_dir / BARS_PNG}, {out_dir / SAMPLES_PNG}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` for the command line: a bad input (ValueError, a missing file) prints one line
    ``error: ...`` naming the file / line and exits 1 instead of a traceback."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
