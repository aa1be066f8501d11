"""Score prediction records with the public protocols and aggregate them per data_source.

One record = ``{id, data_source, ground_truth, response}`` (+ optional ``gt_mask``, ``choices``,
``image``, ``n_tokens``, MathVista ``question_type`` / ``answer_type`` / ``precision``). The task
comes from ``data_source`` (``verl_ext.constants.DATA_SOURCE_TASK``); the rules from
``verl_ext.eval_protocols`` (one module per public script) under an ``EvalProtocol``; responses
are read once with the project's parser ``verl_ext.rewards.parsing``.

Coordinates: every metric is computed in the labels' frame (840 x 840 pixels, ``verl_ext.constants.FRAME``)
whatever the model's convention (``verl_ext.coords``): a response's coordinates are read into the frame
first (``x * frame_scale(coords)``: 1 for Qwen2.5-VL's absolute pixels, 0.84 for Qwen3-VL's relative
0-1000), so a Qwen2.5-VL and a Qwen3-VL run on the same data get comparable numbers. A record's convention
is its ``coords`` key, else the run's (``score_all(coords=...)``, default the paper's ``abs840``).
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from verl_ext import metrics as M
from verl_ext.constants import FRAME, MAX_OBJECTS, task_of
from verl_ext.coords import DEFAULT_COORDS, check_coords, frame_scale
from verl_ext.eval_protocols import EvalProtocol
from verl_ext.eval_protocols import anomaly as anomaly_protocol
from verl_ext.eval_protocols import grounding as grounding_protocol
from verl_ext.eval_protocols import gui as gui_protocol
from verl_ext.eval_protocols import math as math_protocol
from verl_ext.eval_protocols.answers import ObjectAnswer, read_objects, read_public, says_no_target

logger = logging.getLogger("visurf.evaluate")

BOX_TASKS = ("grounding", "anomaly", "lesion")  # tasks scored with gIoU / cIoU / BboxAcc


# ============================================================================================
# Response parsing: one adapter over verl_ext.rewards.parsing (the project's single parser)
# ============================================================================================
@dataclass
class Parsed:
    """What the metrics need from one response."""

    format_valid: bool  # thinking format matched and the answer is well-formed for the task
    answer_valid: bool  # there is an <answer> that parses for the task (JSON list / non-empty text)
    think: str  # project reader: text inside <think>…</think> ("" when absent); public reader: the response
    answer: str | None  # object tasks: the <answer> text; math: the answer the math protocol read
    objects: ObjectAnswer = field(default_factory=ObjectAnswer)  # boxes / points as the run's reader sees them
    count_think: bool = True  # counted in think_len (public reader: only non-empty responses)

    @property
    def boxes(self) -> np.ndarray:
        return self.objects.boxes

    @property
    def points(self) -> np.ndarray:
        return self.objects.points if len(self.objects.points) else self.objects.loose_points


def parse_response(response: str, task: str, math: str = "mathverify", reader: str = "project",
                   coords: str = DEFAULT_COORDS) -> Parsed:
    """Read a response through ``verl_ext.rewards.parsing`` (format, the project reader) and,
    under ``reader="visionreasoner"``, the public reader ``eval_protocols.answers.read_public``.

    ``format_valid`` (ours, either reader): the thinking format holds and the answer is well
    formed for the task (box tasks: every object carries a valid ``bbox_2d`` and ``point_2d``,
    ``[]`` is well formed; gui: at least one object, a valid ``point_2d`` in each; math: a
    non-empty answer under the math protocol ``math``). Boxes / points: ``answers.read_objects``
    (``project``) or ``answers.read_public`` (``visionreasoner``, on the uncut response). Think
    text: inside ``<think>`` (``project``); the whole response, counted when non-empty
    (``visionreasoner``: ``visurf_model.py`` returns the output text as ``thinking``, line 161 /
    195, and ``calculate_*.py`` average ``len(think.split())`` over items with a non-empty think).
    The ``visionreasoner`` math protocol reads the uncut response under either reader.
    ``coords``: the convention of the response's coordinates; both readers return them in frame pixels
    (project: ``parse_objects(scale=frame_scale(coords))``, as the training reward; visionreasoner: the
    public reader's own ``factor``, ``int(v * frame_scale(coords) + 0.5)``).
    """
    from verl_ext.rewards import parsing

    r = parsing.parse_response(response)
    public = reader == "visionreasoner"
    think, count_think = (response, bool(response)) if public else (_think_text(r.text), True)
    if task == "math":
        answer = math_protocol.extract_answer(response if math == "visionreasoner" else r.text, math)
        ok = bool(answer and answer.strip())
        return Parsed(format_valid=r.think_format and ok, answer_valid=ok, think=think, answer=answer,
                      count_think=count_think)
    scale = frame_scale(coords)
    objs = parsing.parse_objects(r.answer, scale=scale)
    if task == "gui":
        well_formed = objs.valid and len(objs) > 0 and bool(objs.point_valid.all())
    else:
        well_formed = objs.valid and not objs.reasons
    return Parsed(format_valid=r.think_format and well_formed, answer_valid=objs.valid, think=think,
                  answer=r.answer, objects=read_public(response, scale) if public else read_objects(objs),
                  count_think=count_think)


def _think_text(text: str) -> str:
    start = text.find("<think>")
    end = text.find("</think>", start + 1) if start >= 0 else -1
    return text[start + len("<think>"):end].strip() if end >= 0 else ""


# ============================================================================================
# GT masks and the optional segmenter
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


class Segmenter(Protocol):
    """Turns predicted boxes/points (FRAME frame) into a mask of ``shape`` (H, W) for ``image``."""

    name: str

    def __call__(self, image, boxes: Sequence, points: Sequence, shape: tuple[int, int]) -> np.ndarray: ...


class Sam2Segmenter:
    """SAM2 prompted with each predicted box (+ its point), masks OR-ed, as in VisionReasoner
    (``visurf_model.py`` ``generate_masks``). It gets ``ObjectAnswer.mask_boxes``: under the
    public reader boxes without points are not passed (the public code ORs no mask for them);
    under the project reader they are prompted without a point.

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
        boxes = M.as_boxes(boxes, limit=None)
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


def open_image(spec, base_dir: Path | None = None):
    """A PIL RGB image from ``{bytes}`` (parquet) or a path (relative to ``base_dir``)."""
    from PIL import Image

    if isinstance(spec, dict) and "bytes" in spec:
        return Image.open(io.BytesIO(spec["bytes"])).convert("RGB")
    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return Image.open(path).convert("RGB")


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
    sample: grounding_protocol.GroundingSample | None = None  # box tasks: inputs of gIoU / cIoU / N-Acc / BboxAcc
    anomaly_label: int | None = None  # anomaly: 1 = the label has boxes
    anomaly_score: int | None = None  # anomaly: the binary "anomalous" score (eval_protocols.anomaly)


class _Group:
    """Accumulates the per-data_source (or overall) inputs of the metric functions."""

    def __init__(self):
        self.n = 0
        self.tasks: set[str] = set()
        self.grounding: list[grounding_protocol.GroundingSample] = []
        self.acc: list[bool] = []
        self.anomaly_labels: list[int] = []
        self.anomaly_scores: list[int] = []
        self.text = M.TextStats()
        self.iou_on: defaultdict[str, int] = defaultdict(int)

    def add(self, s: Scored) -> None:
        self.n += 1
        self.tasks.add(s.task)
        self.text.add(s.parsed.format_valid, str(s.record.get("response") or ""), s.parsed.think,
                      s.record.get("n_tokens"), count_think=s.parsed.count_think)
        if s.task in BOX_TASKS:
            self.grounding.append(s.sample)
            self.iou_on[s.iou_on] += 1
        if s.task == "anomaly":
            self.anomaly_labels.append(s.anomaly_label)
            self.anomaly_scores.append(s.anomaly_score)
        if s.task in ("gui", "math", "anomaly"):
            self.acc.append(bool(s.correct))

    def metrics(self) -> dict:
        out: dict[str, Any] = {"n": self.n}
        if len(self.tasks) == 1:
            out["task"] = next(iter(self.tasks))
        grounding = grounding_protocol.grounding_metrics(self.grounding)
        anomaly = anomaly_protocol.anomaly_metrics(self.anomaly_labels, self.anomaly_scores)
        notes = grounding.pop("notes", []) + anomaly.pop("notes", [])
        out.update(grounding)
        if self.acc:
            out["Acc"] = M.accuracy(self.acc)
        if anomaly:
            out["AUC"] = anomaly["AUC"]  # Acc above is the same decision (anomaly-only sets: equal)
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


def _label_error(record: dict, e: Exception) -> ValueError:
    return ValueError(f"sample {record.get('id')!r} ({record['data_source']}): bad ground_truth "
                      f"{str(record['ground_truth'])[:200]!r}: {e}")


def record_coords(record: dict, coords: str = DEFAULT_COORDS) -> str:
    """The convention of a prediction line's coordinates: its ``coords`` key, else ``coords``;
    ValueError naming the sample for a value that is not a convention."""
    value = record.get("coords") or coords
    try:
        return check_coords(value, "coords")
    except ValueError as e:
        raise ValueError(f"sample {record.get('id')!r} ({record.get('data_source')}): {e}") from None


def score_record(record: dict, protocol: EvalProtocol | None = None, *, segmenter: Segmenter | None = None,
                 image=None, base_dir: Path | None = None, coords: str = DEFAULT_COORDS) -> Scored:
    """Score one prediction line (``id, data_source, ground_truth, response`` [+ extras]); its
    coordinates in the convention ``record_coords(record, coords)``, read into frame pixels."""
    protocol = protocol or EvalProtocol()
    task = task_of(record["data_source"])
    parsed = parse_response(str(record.get("response") or ""), task, protocol.math, protocol.reader,
                            record_coords(record, coords))
    s = Scored(record=record, task=task, parsed=parsed)
    if task == "math":
        extra = {k: record[k] for k in math_protocol.MATH_META_KEYS if record.get(k) is not None}
        s.correct = math_protocol.judge(parsed.answer, str(record["ground_truth"]), record.get("choices"),
                                        protocol.math, extra)
        return s
    from verl_ext.rewards.parsing import parse_label

    try:
        label = parse_label(record["ground_truth"])
    except ValueError as e:  # a data bug: name the sample and the label
        raise _label_error(record, e) from None
    s.gt_boxes, s.gt_points = label.boxes, label.points
    ans = parsed.objects
    if task == "gui":
        s.correct = gui_protocol.gui_hit(ans, s.gt_boxes[0] if len(s.gt_boxes) else None)
        return s
    gt_mask = None
    if record.get("gt_mask") is not None:
        try:
            gt_mask = load_mask(record["gt_mask"], base_dir)
        except (OSError, ValueError) as e:  # a missing / unreadable PNG, a bad RLE: name the sample
            raise ValueError(f"sample {record.get('id')!r} ({record['data_source']}): cannot read gt_mask "
                             f"{str(record['gt_mask'])[:200]!r}: {e}") from None
        s.iou_on = "masks"
    pred_mask = None
    if gt_mask is not None and segmenter is not None and image is not None:
        pred_mask = segmenter(image, ans.mask_boxes, ans.points, gt_mask.shape)
        s.iou_on = f"masks ({segmenter.name})"
    limit = None if protocol.reader == "visionreasoner" else MAX_OBJECTS  # the public reader has no limit
    inter, union = M.intersection_union(ans.mask_boxes, s.gt_boxes, gt_mask=gt_mask, pred_mask=pred_mask,
                                        limit=limit)
    gt_empty = len(label) == 0 if gt_mask is None else not bool(gt_mask.any())
    no_target = says_no_target(ans, protocol.non_object)
    hit_rule = (grounding_protocol.bbox_hit_public if protocol.bbox_acc == "public"
                else grounding_protocol.bbox_hit_matched)
    s.sample = grounding_protocol.GroundingSample(
        intersection=inter, union=union, gt_empty=gt_empty, no_target=no_target, has_target=ans.has_boxes,
        hit=hit_rule(ans.boxes, [] if gt_empty else s.gt_boxes, no_target),
    )
    s.iou = s.sample.iou
    s.correct = s.sample.hit
    if task == "anomaly":
        s.anomaly_label = int(not gt_empty)
        s.anomaly_score = anomaly_protocol.anomaly_score(ans, not gt_empty, protocol.non_object)
        s.correct = s.anomaly_score == s.anomaly_label
    return s


def aggregate(scored: Sequence[Scored]) -> dict:
    """``{data_source: metrics, ..., "overall": metrics}`` (see metrics.json in EVALUATION.md)."""
    out = aggregate_by(scored, lambda record: record["data_source"])
    if scored:
        out["overall"] = aggregate_by(scored, lambda record: "overall")["overall"]
    return out


def aggregate_by(scored: Sequence[Scored], key: Callable[[dict], str | None]) -> dict:
    """``{key(record): metrics}`` over the scored records (records with key None are left out),
    with the same definitions as ``aggregate``; e.g. per part of a synthetic held-out set."""
    groups: dict[str, _Group] = defaultdict(_Group)
    for s in scored:
        name = key(s.record)
        if name is not None:
            groups[str(name)].add(s)
    return {name: groups[name].metrics() for name in sorted(groups)}


def score_all(records: Sequence[dict], protocol: EvalProtocol | None = None, *, segmenter: Segmenter | None = None,
              images: dict[tuple[str, str], Any] | None = None,
              base_dir: Path | None = None, coords: str = DEFAULT_COORDS) -> tuple[dict, list[Scored]]:
    """Score every record; returns (metrics by data_source + overall, scored records).
    ``coords``: the convention of records without a ``coords`` key (``record_coords``).

    ``images``: ``{(data_source, id): image spec}`` for the segmenter (else the record's ``image``).
    """
    from tqdm import tqdm

    from recipe.visurf.eval_backends import sample_key

    images = images or {}
    scored = []
    for rec in tqdm(records, desc="scoring", disable=len(records) < 200):
        image = None
        if segmenter is not None and rec.get("gt_mask") is not None:  # decoded only where it is used
            spec = images.get(sample_key(rec)) or rec.get("image")
            image = open_image(spec, base_dir) if spec is not None else None
        scored.append(score_record(rec, protocol, segmenter=segmenter, image=image, base_dir=base_dir,
                                   coords=coords))
    return aggregate(scored), scored
