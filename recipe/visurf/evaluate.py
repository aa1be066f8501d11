"""Evaluate a checkpoint (or any system's predictions) with the paper's metrics.

Three modes (see ``recipe/visurf/EVALUATION.md``):

* generate: greedy decoding over data_prep parquet files, then scoring::

      python -m recipe.visurf.evaluate --model CKPT_OR_HF_DIR --data val.parquet [more.parquet] \
          --out eval/run1 [--backend hf|vllm] [--batch-size 8] [--limit 500] [--max-new-tokens 2048]

* score-only: score a JSONL of ``{id, data_source, ground_truth, response}`` lines (plus
  optional ``gt_mask`` PNG path / COCO RLE, ``choices``, ``image``, ``n_tokens``)::

      python -m recipe.visurf.evaluate --predictions preds.jsonl --out eval/other_system

* compare: side-by-side table of several runs' ``metrics.json``::

      python -m recipe.visurf.evaluate --compare eval/visurf eval/grpo eval/sft

Outputs in ``--out``: ``predictions.jsonl`` (generate mode; resumable: ids already there are
not generated again), ``metrics.json``, ``report.md``, ``metrics.png``, ``samples.png``.
Metric definitions: ``verl_ext/metrics.py``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import io
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from verl_ext import metrics as M
from verl_ext.constants import FRAME, task_of

logger = logging.getLogger("visurf.evaluate")

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.md"
BARS_PNG = "metrics.png"
SAMPLES_PNG = "samples.png"
BOX_TASKS = ("grounding", "anomaly", "lesion")  # tasks scored with gIoU / cIoU / BboxAcc
SAMPLE_GRID = 8  # images in samples.png


# ============================================================================================
# Response parsing: one adapter over verl_ext.rewards.parsing (the project's single parser)
# ============================================================================================
@dataclass
class Parsed:
    """What the metrics need from one response."""

    format_valid: bool  # thinking format matched and the answer is well-formed for the task
    answer_valid: bool  # there is an <answer> that parses for the task (JSON list / non-empty text)
    empty: bool  # the answer is a valid empty list `[]` (non-object / normal prediction)
    think: str  # text inside <think>…</think>, "" when absent
    answer: str | None  # answer text (math: the \\boxed{} content when there is one), None when absent
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # valid predicted boxes
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # valid predicted points


def parse_response(response: str, task: str) -> Parsed:
    """Read a response through ``verl_ext.rewards.parsing`` (the project's single parser).

    Adapter-only additions: the ``<think>`` text (for think length), and the per-task rule of a
    well-formed answer: box tasks need every object to carry a valid ``bbox_2d`` and ``point_2d``
    (``[]`` is well-formed); gui needs at least one object and a valid ``point_2d`` in each; math
    needs a non-empty answer.
    """
    from verl_ext.rewards import parsing

    r = parsing.parse_response(response)
    think = _think_text(r.text)
    if task == "math":
        answer = r.answer
        if answer is not None:
            answer = (parsing.extract_boxed(answer) or answer).strip()
        ok = bool(answer)
        return Parsed(format_valid=r.think_format and ok, answer_valid=ok, empty=False, think=think,
                      answer=answer or None)
    objs = parsing.parse_objects(r.answer)
    if task == "gui":
        well_formed = objs.valid and len(objs) > 0 and bool(objs.point_valid.all())
    else:
        well_formed = objs.valid and not objs.reasons
    return Parsed(
        format_valid=r.think_format and well_formed,
        answer_valid=objs.valid,
        empty=objs.is_empty_list,
        think=think,
        answer=r.answer,
        boxes=objs.boxes[objs.box_valid],
        points=objs.points[objs.point_valid],
    )


def _think_text(text: str) -> str:
    start = text.find("<think>")
    end = text.find("</think>", start + 1) if start >= 0 else -1
    return text[start + len("<think>"):end].strip() if end >= 0 else ""


# ============================================================================================
# Labels and GT masks
# ============================================================================================
def load_mask(spec: Any, base_dir: Path | None = None) -> np.ndarray:
    """A boolean GT mask from a PNG path (nonzero = object), a COCO RLE dict, or a 2-D list."""
    if isinstance(spec, str | os.PathLike):
        from PIL import Image

        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 0
    if isinstance(spec, dict) and "counts" in spec:
        from pycocotools import mask as mask_utils

        rle = dict(spec)
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        elif isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
        return mask_utils.decode(rle).astype(bool)
    arr = np.asarray(spec, dtype=bool)
    if arr.ndim != 2:
        raise ValueError(f"gt_mask must be a PNG path, a COCO RLE or a 2-D list, got shape {arr.shape}")
    return arr


# ============================================================================================
# Segmenter hook (optional; GPU users)
# ============================================================================================
class Segmenter(Protocol):
    """Turns predicted boxes/points (FRAME frame) into a mask of ``shape`` (H, W) for ``image``."""

    name: str

    def __call__(self, image, boxes: Sequence, points: Sequence, shape: tuple[int, int]) -> np.ndarray: ...


class Sam2Segmenter:
    """SAM2 prompted with each predicted box (+ its point), masks OR-ed, as in VisionReasoner.

    Optional: needs the ``sam2`` package (``pip install 'git+https://github.com/facebookresearch/sam2'``)
    and, offline, a locally cached checkpoint. Used only for samples that have a GT mask and an
    image; ``report.md`` says so.
    """

    name = "sam2"

    def __init__(self, model_id: str = "facebook/sam2-hiera-large", device: str | None = None):
        try:
            import torch
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError as e:
            raise ImportError(
                "--segmenter sam2 needs the optional `sam2` package: "
                "pip install 'git+https://github.com/facebookresearch/sam2' (GPU recommended)"
            ) from e
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.predictor = SAM2ImagePredictor.from_pretrained(model_id, device=device)

    def __call__(self, image, boxes, points, shape):
        h, w = shape
        out = np.zeros((h, w), dtype=bool)
        boxes = M.as_boxes(boxes)
        if len(boxes) == 0:
            return out
        self.predictor.set_image(np.asarray(image.convert("RGB").resize((w, h))))
        scale = np.array([w, h, w, h], dtype=np.float64) / FRAME
        pts = list(points) if len(points) == len(boxes) else [None] * len(boxes)
        for box, pt in zip(boxes, pts):
            kwargs = {"box": box * scale, "multimask_output": True}
            if pt is not None:
                kwargs.update(point_coords=[[pt[0] * w / FRAME, pt[1] * h / FRAME]], point_labels=[1])
            masks, scores, _ = self.predictor.predict(**kwargs)
            out |= np.asarray(masks[int(np.argmax(scores))], dtype=bool)
        return out


def make_segmenter(name: str | None, model_id: str | None) -> Segmenter | None:
    if not name or name == "none":
        return None
    if name == "sam2":
        return Sam2Segmenter(model_id or "facebook/sam2-hiera-large")
    raise ValueError(f"unknown segmenter {name!r}; known: none, sam2")


# ============================================================================================
# Scoring
# ============================================================================================
@dataclass
class Scored:
    """One scored prediction (kept for the report and the sample grid)."""

    record: dict
    task: str
    parsed: Parsed
    gt_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    gt_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    correct: bool | None = None  # BboxAcc hit / GUI hit / anomaly decision / math answer
    iou: float | None = None  # per-sample IoU (box tasks)
    iou_on: str = "boxes"  # "boxes", "masks", "masks (<segmenter>)"
    sample: M.GroundingSample | None = None  # box tasks: the inputs of gIoU / cIoU / N-Acc / BboxAcc


class _Group:
    """Accumulates the per-data_source (or overall) inputs of the metric functions."""

    def __init__(self):
        self.n = 0
        self.tasks: set[str] = set()
        self.grounding: list[M.GroundingSample] = []
        self.acc: list[bool] = []
        self.anomaly_labels: list[int] = []
        self.anomaly_pred: list[int] = []
        self.text = M.TextStats()
        self.iou_on: defaultdict[str, int] = defaultdict(int)
        self.notes: list[str] = []

    def metrics(self) -> dict:
        out: dict[str, Any] = {"n": self.n}
        if len(self.tasks) == 1:
            out["task"] = next(iter(self.tasks))
        grounding = M.grounding_metrics(self.grounding)
        anomaly = M.anomaly_metrics(self.anomaly_labels, self.anomaly_pred)
        notes = list(self.notes) + grounding.pop("notes", []) + anomaly.pop("notes", [])
        out.update(grounding)
        if self.acc:
            out["Acc"] = M.accuracy(self.acc)
        if anomaly and "anomaly" in self.tasks and len(self.tasks) == 1:
            out.update(anomaly)  # anomaly Acc = "any box predicted" vs label
        elif anomaly:
            out["AUC"] = anomaly["AUC"]  # overall: AUC over the anomaly samples
        out.update(self.text.metrics())
        if self.grounding:
            out["iou_on"] = _iou_on_text(self.iou_on)
        if notes:
            out["notes"] = notes
        return out


def _iou_on_text(counts: dict[str, int]) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return "mixed: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def score_record(record: dict, *, strict_bbox: bool = False, segmenter: Segmenter | None = None,
                 image=None, base_dir: Path | None = None) -> Scored:
    """Score one prediction line (``id, data_source, ground_truth, response`` [+ extras])."""
    task = task_of(record["data_source"])
    parsed = parse_response(str(record.get("response") or ""), task)
    s = Scored(record=record, task=task, parsed=parsed)
    if task == "math":
        s.correct = M.math_correct(parsed.answer, record["ground_truth"], record.get("choices"))
        return s
    from verl_ext.rewards.parsing import parse_label

    try:
        label = parse_label(record["ground_truth"])
    except ValueError as e:  # a data bug: name the sample and the label
        raise ValueError(f"sample {record.get('id')!r} ({record['data_source']}): bad ground_truth "
                         f"{str(record['ground_truth'])[:200]!r}: {e}") from None
    s.gt_boxes, s.gt_points = label.boxes, label.points
    if task == "gui":
        s.correct = M.point_in_box(parsed.points, s.gt_boxes[0] if len(s.gt_boxes) else None)
        return s
    gt_mask = None
    if record.get("gt_mask") is not None:
        gt_mask = load_mask(record["gt_mask"], base_dir)
        s.iou_on = "masks"
    pred_mask = None
    if gt_mask is not None and segmenter is not None and image is not None:
        pred_mask = segmenter(image, parsed.boxes, parsed.points, gt_mask.shape)
        s.iou_on = f"masks ({segmenter.name})"
    inter, union = M.intersection_union(parsed.boxes, s.gt_boxes, gt_mask=gt_mask, pred_mask=pred_mask)
    sample = M.GroundingSample(
        intersection=inter,
        union=union,
        gt_empty=len(label) == 0,
        pred_empty=parsed.empty,
        hit=(parsed.empty if len(label) == 0 else M.bbox_hit(parsed.boxes, s.gt_boxes, strict=strict_bbox)),
    )
    s.iou = sample.iou
    s.correct = sample.hit
    s.sample = sample
    if task == "anomaly":
        s.correct = (len(parsed.boxes) > 0) == (len(label) > 0)
    return s


def aggregate(scored: Sequence[Scored]) -> dict:
    """``{data_source: metrics, ..., "overall": metrics}`` (see metrics.json in EVALUATION.md)."""
    groups: dict[str, _Group] = defaultdict(_Group)
    overall = _Group()
    for s in scored:
        for g in (groups[s.record["data_source"]], overall):
            g.n += 1
            g.tasks.add(s.task)
            g.text.add(s.parsed.format_valid, str(s.record.get("response") or ""), s.parsed.think,
                       s.record.get("n_tokens"))
            if s.task in BOX_TASKS:
                g.grounding.append(s.sample)
                g.iou_on[s.iou_on] += 1
            if s.task == "anomaly":
                g.anomaly_labels.append(int(len(s.gt_boxes) > 0))
                g.anomaly_pred.append(int(len(s.parsed.boxes) > 0))
            if s.task in ("gui", "math", "anomaly"):
                g.acc.append(bool(s.correct))
    out = {ds: groups[ds].metrics() for ds in sorted(groups)}
    if scored:
        out["overall"] = overall.metrics()
    return out


def score_all(records: Sequence[dict], *, strict_bbox: bool = False, segmenter: Segmenter | None = None,
              images: dict[str, Any] | None = None, base_dir: Path | None = None) -> tuple[dict, list[Scored]]:
    """Score every record; returns (metrics by data_source + overall, scored records)."""
    from tqdm import tqdm

    images = images or {}
    scored = []
    for rec in tqdm(records, desc="scoring", disable=len(records) < 200):
        image = None
        if segmenter is not None and rec.get("gt_mask") is not None:  # decoded only where it is used
            spec = images.get(str(rec["id"])) or rec.get("image")
            image = _open_image(spec, base_dir) if spec is not None else None
        scored.append(score_record(rec, strict_bbox=strict_bbox, segmenter=segmenter, image=image,
                                   base_dir=base_dir))
    return aggregate(scored), scored


def _open_image(spec, base_dir: Path | None = None):
    from PIL import Image

    if isinstance(spec, dict) and "bytes" in spec:
        return Image.open(io.BytesIO(spec["bytes"])).convert("RGB")
    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return Image.open(path).convert("RGB")


# ============================================================================================
# Data: parquet rows -> chat messages (as verl's RLHFDataset builds them)
# ============================================================================================
def _plain(value):
    """numpy arrays / pyarrow scalars from pandas -> plain Python lists and dicts."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def iter_rows(files: Sequence[str], limit: int | None = None) -> Iterator[dict]:
    """Rows of data_prep parquet files with an ``id`` (``extra_info.id``, else ``<file stem>-<row>``)."""
    import pandas as pd

    for file in files:
        df = pd.read_parquet(file)
        if limit is not None:
            df = df.head(limit)
        for i, row in enumerate(df.to_dict(orient="records")):
            row = {k: _plain(v) for k, v in row.items()}
            extra = row.get("extra_info") or {}
            row["id"] = str(extra.get("id") or f"{Path(file).stem}-{i}")
            yield row


def build_messages(row: dict, processor) -> list[dict]:
    """Chat messages with the ``<image>`` placeholders replaced, by verl's own
    ``RLHFDataset._build_messages`` (the exact code training uses)."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    view = SimpleNamespace(image_key="images", video_key="videos", audio_key="audios", processor=processor)
    return RLHFDataset._build_messages(view, copy.deepcopy(row), key="prompt")


def prompt_inputs(messages: list[dict], processor) -> tuple[str, list]:
    """(prompt text, images) exactly as verl's agent loop renders a rollout prompt."""
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.tokenizer.chat_template import apply_chat_template

    patch = getattr(getattr(processor, "image_processor", None), "patch_size", 14)
    images, _, _ = RLHFDataset._process_multi_modal_info(messages, image_patch_size=patch, config=None)
    text = apply_chat_template(processor, messages, tokenize=False, add_generation_prompt=True)
    return text, list(images or [])


def row_record(row: dict) -> dict:
    """The prediction-line fields of a parquet row (everything but the response)."""
    extra = row.get("extra_info") or {}
    rec = {
        "id": row["id"],
        "data_source": row["data_source"],
        "ground_truth": (row.get("reward_model") or {}).get("ground_truth"),
    }
    if extra.get("choices"):
        rec["choices"] = list(extra["choices"])
    if extra.get("gt_mask") is not None:
        rec["gt_mask"] = extra["gt_mask"]
    return rec


# ============================================================================================
# Models: verl checkpoint or HF directory; HF and vLLM backends
# ============================================================================================
def _has_hf_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any(
        list(d.glob(p)) for p in ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
    )


def resolve_model_dir(path: str, work_dir: Path) -> Path:
    """An HF model directory for ``path``.

    Accepts an HF model directory; a verl trainer checkpoint root (``.../ckpts``, uses
    ``latest_checkpointed_iteration.txt`` or the highest ``global_step_N``); ``global_step_N``;
    or its ``actor/`` folder. verl 0.9.1 FSDP checkpoints keep config/tokenizer/processor in
    ``actor/huggingface/`` and the weights as ``model_world_size_W_rank_R.pt`` shards: those are
    merged once with ``verl.model_merger`` into ``<out>/merged_model`` (reused afterwards).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--model {path}: no such directory")
    if _has_hf_weights(p):
        return p
    latest = p / "latest_checkpointed_iteration.txt"
    if latest.is_file():
        p = p / f"global_step_{latest.read_text().strip()}"
    elif not (p / "actor").is_dir() and not (p / "fsdp_config.json").is_file():
        steps = sorted(p.glob("global_step_*"), key=lambda d: int(d.name.rsplit("_", 1)[-1]))
        if steps:
            p = steps[-1]
    if (p / "actor").is_dir():
        p = p / "actor"
    if _has_hf_weights(p / "huggingface"):  # saved with checkpoint.save_contents including hf_model
        return p / "huggingface"
    if (p / "fsdp_config.json").is_file():
        return _merge_fsdp(p, work_dir / "merged_model")
    raise ValueError(
        f"--model {path}: neither an HF model directory (config.json + weights) nor a verl checkpoint "
        f"(global_step_N/actor with fsdp_config.json and model_world_size_*_rank_*.pt); looked at {p}"
    )


def _merge_fsdp(actor_dir: Path, target: Path) -> Path:
    """Merge verl FSDP shards into an HF directory with verl's own model merger (cached)."""
    stamp = target / ".merged_from"
    source = str(actor_dir.resolve())
    if _has_hf_weights(target) and stamp.is_file() and stamp.read_text() == source:
        logger.info("reusing merged checkpoint %s", target)
        return target
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    logger.info("merging verl FSDP checkpoint %s -> %s", actor_dir, target)
    target.mkdir(parents=True, exist_ok=True)
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor_dir), target_dir=str(target),
                               hf_model_config_path=str(actor_dir / "huggingface"))
    merger = FSDPModelMerger(config)
    merger.merge_and_save()
    merger.cleanup()
    stamp.write_text(source)
    return target


class HFGenerator:
    """Greedy batched generation with transformers (CPU or one GPU)."""

    def __init__(self, model_dir: Path, max_new_tokens: int, device: str | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batching
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def generate(self, rows: Sequence[dict]) -> list[tuple[str, int]]:
        import torch

        texts, images = [], []
        for row in rows:
            text, imgs = prompt_inputs(build_messages(row, self.processor), self.processor)
            texts.append(text)
            images.extend(imgs)
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      temperature=None, top_p=None, top_k=None, pad_token_id=self.pad_id)
        gen = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.processor.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [(text, int((ids != self.pad_id).sum())) for text, ids in zip(decoded, gen)]


class VLLMGenerator:
    """Greedy generation with vLLM (GPU). Needs ``requirements-gpu.txt`` (verl[vllm])."""

    def __init__(self, model_dir: Path, max_new_tokens: int, tensor_parallel_size: int = 1):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise ImportError("--backend vllm needs vllm (GPU): pip install -r requirements-gpu.txt") from e
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.llm = LLM(model=str(model_dir), tensor_parallel_size=tensor_parallel_size,
                       limit_mm_per_prompt={"image": 4})
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(self, rows: Sequence[dict]) -> list[tuple[str, int]]:
        prompts = []
        for row in rows:
            text, imgs = prompt_inputs(build_messages(row, self.processor), self.processor)
            prompts.append({"prompt": text, "multi_modal_data": {"image": imgs}} if imgs else {"prompt": text})
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outs]


PREDICTION_KEYS = ("id", "data_source", "ground_truth", "response")


def read_predictions(path: Path) -> list[dict]:
    """Prediction lines; a truncated last line (interrupted run) is dropped with a warning."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                logger.warning("%s: dropping a truncated last line (interrupted run)", path)
                continue
            raise ValueError(f"{path}:{k + 1}: not a JSON line") from None
        missing = [key for key in PREDICTION_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}:{k + 1}: prediction lines need {', '.join(PREDICTION_KEYS)}; missing {missing}")
        out.append(record)
    return out


def generate(args, out_dir: Path) -> tuple[list[dict], dict[str, Any]]:
    """Generate the missing predictions into ``predictions.jsonl``; returns (records, images by id)."""
    from tqdm import tqdm

    pred_path = out_dir / PREDICTIONS
    done = read_predictions(pred_path)
    if done:  # rewrite without a possibly truncated last line before appending
        with open(pred_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in done)
    done_ids = {str(r["id"]) for r in done}
    rows = list(iter_rows(args.data, args.limit))
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate ids across --data rows; ids come from extra_info.id or <file stem>-<row>")
    todo = [r for r in rows if r["id"] not in done_ids]
    logger.info("%d rows, %d already in %s, %d to generate", len(rows), len(rows) - len(todo), pred_path, len(todo))
    if todo:
        model_dir = resolve_model_dir(args.model, out_dir)
        logger.info("loading %s (%s backend)", model_dir, args.backend)
        if args.backend == "vllm":
            gen = VLLMGenerator(model_dir, args.max_new_tokens, args.tensor_parallel_size)
        else:
            gen = HFGenerator(model_dir, args.max_new_tokens, args.device)
        with open(pred_path, "a", encoding="utf-8") as f:
            for start in tqdm(range(0, len(todo), args.batch_size), desc="generating", unit="batch"):
                batch = todo[start:start + args.batch_size]
                for row, (text, n_tok) in zip(batch, gen.generate(batch)):
                    f.write(json.dumps({**row_record(row), "response": text, "n_tokens": n_tok}) + "\n")
                f.flush()
    wanted = set(ids)
    records = [r for r in read_predictions(pred_path) if str(r["id"]) in wanted]
    images = {}
    for row in rows:
        if row.get("images"):
            images[row["id"]] = row["images"][0]  # {bytes}; decoded lazily for plots / segmenter
    return records, images


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


def _table_columns(metrics: dict) -> list[str]:
    present = {k for m in metrics.values() for k in m}
    return [k for k in ("n", *M.METRIC_KEYS, "resp_tokens") if k in present]


def metrics_table(metrics: dict) -> str:
    """Markdown table: one row per data_source (+ overall), fractions as percentages."""
    cols = _table_columns(metrics)
    head = ["data_source", "task", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds, m in metrics.items():
        lines.append("| " + " | ".join([ds, m.get("task", "mixed" if ds == "overall" else "–")]
                                      + [_fmt(c, m.get(c)) for c in cols]) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, metrics: dict, source: str, strict_bbox: bool, segmenter: Segmenter | None) -> None:
    iou_lines = sorted({f"- `{ds}`: {m['iou_on']}" for ds, m in metrics.items() if "iou_on" in m and ds != "overall"})
    notes = [f"- `{ds}`: {n}" for ds, m in metrics.items() if ds != "overall" for n in m.get("notes", [])]
    basis = (
        "IoU basis (per data_source): `boxes` = union of the predicted boxes vs union of the GT boxes, "
        f"rasterised on the {FRAME}x{FRAME} frame; `masks` = predicted boxes rasterised at the GT mask's "
        "resolution vs the GT mask; `masks (sam2)` = the segmenter's mask vs the GT mask."
    )
    text = [
        "# ViSurf evaluation report",
        "",
        f"- source: `{source}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- samples: {metrics.get('overall', {}).get('n', 0)}",
        f"- segmenter: {segmenter.name if segmenter else 'none'}; BboxAcc: {'strict' if strict_bbox else 'public'} rule",
        "",
        "Fractions in percent. gIoU = mean per-sample IoU (non-object sample: 1 iff the answer is `[]`); "
        "cIoU = Σ intersection / Σ union; N-Acc = non-object samples answered `[]`; BboxAcc = every GT box "
        "matched one-to-one by a predicted box with IoU > 0.5; Acc = GUI point in box / anomaly decision "
        "(any box vs label) / math_verify answer; AUC = ROC AUC of the anomaly decision; format = thinking "
        "format + valid answer; resp_len / think_len = mean words. `overall` pools all samples "
        "(Acc over the accuracy-scored tasks).",
        "",
        metrics_table(metrics),
        "",
        basis,
        "",
        *(iou_lines or ["- no box-scored data_source"]),
    ]
    if notes:
        text += ["", "Notes:", *notes]
    text += ["", f"![metrics]({BARS_PNG})", "", f"![samples]({SAMPLES_PNG})", ""]
    (out_dir / REPORT).write_text("\n".join(text), encoding="utf-8")


def plot_bars(out_dir: Path, metrics: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(metrics)
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
    path = out_dir / BARS_PNG
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_samples(out_dir: Path, scored: Sequence[Scored], images: dict[str, Any] | None = None,
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
        spec = images.get(str(s.record["id"])) or s.record.get("image")
        img = None
        if spec is not None:
            try:
                img = _open_image(spec, base_dir)
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
    path = out_dir / SAMPLES_PNG
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_outputs(out_dir: Path, metrics: dict, scored: Sequence[Scored], *, source: str, strict_bbox: bool,
                  segmenter: Segmenter | None, images: dict | None = None, base_dir: Path | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_report(out_dir, metrics, source, strict_bbox, segmenter)
    plot_bars(out_dir, metrics)
    plot_samples(out_dir, scored, images, base_dir)


def compare_table(dirs: Sequence[str]) -> str:
    """Side-by-side table: rows = (data_source, metric), one column per run."""
    runs = {}
    for d in dirs:
        path = Path(d) / METRICS
        if not path.is_file():
            raise FileNotFoundError(f"--compare: {path} not found (run an evaluation into {d} first)")
        runs[Path(d).name or d] = json.loads(path.read_text())
    names = list(runs)
    sources = list(dict.fromkeys(ds for m in runs.values() for ds in m if ds != "overall")) + ["overall"]
    head = ["data_source", "metric", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in sources:
        keys = [k for k in ("n", *M.METRIC_KEYS, "resp_tokens") if any(k in runs[r].get(ds, {}) for r in names)]
        for k in keys:
            lines.append("| " + " | ".join([ds, k] + [_fmt(k, runs[r].get(ds, {}).get(k)) for r in names]) + " |")
    return "\n".join(lines)


# ============================================================================================
# CLI
# ============================================================================================
EPILOG = """examples:
  # generate with a verl checkpoint (FSDP shards are merged once into OUT/merged_model) and score
  python -m recipe.visurf.evaluate --model checkpoints/visurf/global_step_200 \\
      --data data/refcocog_test.parquet data/grefcoco_val.parquet --out eval/visurf --backend vllm
  # CPU smoke test with the tiny model
  python -m verl_ext.tiny --out /tmp/tiny && python -m data_prep.synthetic --task grounding --n 8 --seed 0 --out /tmp/g.parquet
  python -m recipe.visurf.evaluate --model /tmp/tiny --data /tmp/g.parquet --out /tmp/eval --max-new-tokens 32
  # score another system's outputs
  python -m recipe.visurf.evaluate --predictions preds.jsonl --out eval/baseline
  # compare runs
  python -m recipe.visurf.evaluate --compare eval/visurf eval/grpo eval/sft
"""


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--bbox-acc-strict", action="store_true",
                   help="BboxAcc also fails samples with extra predicted boxes (default: public rule)")
    p.add_argument("--segmenter", choices=("none", "sam2"), default="none",
                   help="turn predicted boxes into masks for samples with a GT mask (sam2: optional, GPU)")
    p.add_argument("--segmenter-model", default=None, help="segmenter checkpoint id (sam2: facebook/sam2-hiera-large)")
    return p


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
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = make_segmenter(args.segmenter, args.segmenter_model)
    if args.model:
        records, images = generate(args, out_dir)
        base_dir, source = None, f"{args.model} on {', '.join(args.data)}"
    else:
        pred_path = Path(args.predictions)
        records, images, base_dir, source = read_predictions(pred_path), {}, pred_path.parent, str(pred_path)
        if not records:
            raise SystemExit(f"{pred_path}: no predictions")
        if pred_path.resolve() != (out_dir / PREDICTIONS).resolve():
            with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
    metrics, scored = score_all(records, strict_bbox=args.bbox_acc_strict, segmenter=segmenter, images=images,
                                base_dir=base_dir)
    write_outputs(out_dir, metrics, scored, source=source, strict_bbox=args.bbox_acc_strict, segmenter=segmenter,
                  images=images, base_dir=base_dir)
    print(metrics_table(metrics))
    print(f"\nwrote {out_dir / METRICS}, {out_dir / REPORT}, {out_dir / BARS_PNG}, {out_dir / SAMPLES_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
