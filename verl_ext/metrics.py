"""Evaluation metrics of the paper (METHOD.md §5), as pure functions on plain data.

Nothing here parses model text: callers hand in boxes / points / answers that were parsed once
(``recipe/visurf/evaluate.py`` uses ``verl_ext.rewards.parsing``). Every threshold comes from
``verl_ext.constants``.

Definitions (they follow the public VisionReasoner evaluation scripts
``evaluation/calculate_iou_with_bbox_nonobj.py``, ``calculate_acc_auc.py``,
``evaluation_gui.py``, ``calculate_math_acc.py``; where those are silent we say what we chose):

* Coordinates live in the ``FRAME x FRAME`` frame. A box ``[x1, y1, x2, y2]`` is an inclusive
  pixel box (``verl_ext.constants``, the same convention as the training reward and data_prep):
  it covers pixels ``x1..x2``, ``y1..y2``, area ``(x2 - x1 + 1) * (y2 - y1 + 1)``; box IoU is
  the reward's own ``box_iou``. Swapped corners are put in order, coordinates are clipped to
  the frame, boxes with a non-finite coordinate are dropped.
* Per-sample intersection / union: the *union* of the predicted boxes rasterised against the
  union of the GT boxes on the frame, or against the GT mask when there is one (predicted boxes
  are then rasterised at the mask's resolution, or a segmenter's mask is used).
* gIoU = mean per-sample IoU. A non-object sample (label ``[]``) scores 1 when the prediction is
  a valid empty list and 0 otherwise; a sample with objects and an empty union scores 0.
* cIoU = Σ intersection / Σ union over all samples (a non-object sample adds the predicted area
  to the union, so false positives lower cIoU). Undefined (``None`` + a note) when Σ union = 0,
  i.e. a set of non-object samples all answered without boxes.
* N-Acc = non-object samples answered with a valid empty list / non-object samples (only
  reported when the set has non-object samples).
* BboxAcc (our generalisation of the public single-box rule "some predicted box has IoU > 0.5
  with the GT box"): predicted and GT boxes are matched one-to-one (Hungarian, maximising the
  number of pairs with box IoU > ``IOU_MATCH``); a sample is a hit when every GT box is
  matched. With one GT box this is exactly the public rule. ``strict=True`` additionally
  requires as many predicted as GT boxes (no extra boxes). A non-object sample is a hit iff the
  prediction is a valid empty list.
* GUI accuracy: some predicted point lies inside the GT element box (borders included), as in
  the public script.
* Anomaly: a sample is predicted anomalous when at least one box is predicted; Acc compares this
  with "the label has boxes"; ROC AUC (sklearn) uses the same binary score. With one class only
  AUC is undefined: it is returned as ``None`` with a note, never an exception.
* Math accuracy: ``math_verify`` equivalence of the answer and the label; for multiple choice
  (``choices`` given, label = option letter) the option letter or the option text are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from verl_ext.constants import FRAME, IOU_MATCH, MAX_OBJECTS

# metric keys, in the order tables print them
METRIC_KEYS = ("gIoU", "cIoU", "N-Acc", "BboxAcc", "Acc", "AUC", "format", "resp_len", "think_len")
FRACTION_KEYS = ("gIoU", "cIoU", "N-Acc", "BboxAcc", "Acc", "AUC", "format")


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def as_boxes(boxes) -> np.ndarray:
    """``(N, 4)`` float array of ordered, finite boxes (x1 <= x2, y1 <= y2); at most MAX_OBJECTS."""
    arr = np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 4)[:MAX_OBJECTS]
    arr = arr[np.isfinite(arr).all(axis=1)]
    return np.stack(
        [
            np.minimum(arr[:, 0], arr[:, 2]),
            np.minimum(arr[:, 1], arr[:, 3]),
            np.maximum(arr[:, 0], arr[:, 2]),
            np.maximum(arr[:, 1], arr[:, 3]),
        ],
        axis=1,
    )


def pairwise_box_iou(pred, gt) -> np.ndarray:
    """``(N, M)`` IoU of every predicted box against every GT box — the reward's own
    ``box_iou`` (inclusive pixel boxes, see ``verl_ext.constants``), so reward and evaluation agree."""
    from verl_ext.rewards.grounding import box_iou

    p, g = as_boxes(pred), as_boxes(gt)
    if len(p) == 0 or len(g) == 0:
        return np.zeros((len(p), len(g)))
    return box_iou(p[:, None], g[None])


def rasterize_boxes(boxes, height: int = FRAME, width: int = FRAME, frame: int = FRAME) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the union of ``boxes`` given in the ``frame`` frame.

    Boxes are inclusive pixel boxes (``verl_ext.constants``): ``[x1, y1, x2, y2]`` covers frame
    pixels x1..x2 and y1..y2, i.e. the area ``[x1, x2 + 1) x [y1, y2 + 1)``, scaled to the mask.
    Vectorised with a 2-D difference array (four scatter-adds per box, two cumulative sums),
    so the cost is O(height * width) whatever the number of boxes.
    """
    b = as_boxes(boxes)
    if len(b) == 0:
        return np.zeros((height, width), dtype=bool)
    sx, sy = width / frame, height / frame
    x1 = np.clip(np.rint(b[:, 0] * sx), 0, width).astype(np.int64)
    x2 = np.clip(np.rint((b[:, 2] + 1) * sx), 0, width).astype(np.int64)
    y1 = np.clip(np.rint(b[:, 1] * sy), 0, height).astype(np.int64)
    y2 = np.clip(np.rint((b[:, 3] + 1) * sy), 0, height).astype(np.int64)
    keep = (x2 > x1) & (y2 > y1)
    x1, x2, y1, y2 = x1[keep], x2[keep], y1[keep], y2[keep]
    diff = np.zeros((height + 1, width + 1), dtype=np.int32)
    np.add.at(diff, (y1, x1), 1)
    np.add.at(diff, (y1, x2), -1)
    np.add.at(diff, (y2, x1), -1)
    np.add.at(diff, (y2, x2), 1)
    return diff.cumsum(axis=0).cumsum(axis=1)[:height, :width] > 0


def mask_intersection_union(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks of the same shape."""
    pred_mask, gt_mask = np.asarray(pred_mask, dtype=bool), np.asarray(gt_mask, dtype=bool)
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"mask shapes differ: prediction {pred_mask.shape} vs GT {gt_mask.shape}")
    return int(np.logical_and(pred_mask, gt_mask).sum()), int(np.logical_or(pred_mask, gt_mask).sum())


def intersection_union(pred_boxes, gt_boxes=None, gt_mask: np.ndarray | None = None,
                       pred_mask: np.ndarray | None = None) -> tuple[int, int]:
    """Per-sample (intersection, union).

    Without ``gt_mask``: union of predicted boxes vs union of GT boxes, rasterised on the frame.
    With ``gt_mask`` (H x W): against the mask; the prediction is ``pred_mask`` when a segmenter
    produced one, else the predicted boxes rasterised at H x W.
    """
    if gt_mask is None:
        return mask_intersection_union(rasterize_boxes(pred_boxes), rasterize_boxes(gt_boxes))
    gt_mask = np.asarray(gt_mask, dtype=bool)
    if pred_mask is None:
        pred_mask = rasterize_boxes(pred_boxes, height=gt_mask.shape[0], width=gt_mask.shape[1])
    return mask_intersection_union(pred_mask, gt_mask)


def bbox_hit(pred_boxes, gt_boxes, strict: bool = False, iou_threshold: float = IOU_MATCH) -> bool:
    """BboxAcc for one sample: every GT box matched one-to-one by a predicted box with IoU > threshold.

    Empty GT: hit iff no box is predicted. ``strict`` also forbids extra predicted boxes.
    """
    from scipy.optimize import linear_sum_assignment

    p, g = as_boxes(pred_boxes), as_boxes(gt_boxes)
    if len(g) == 0:
        return len(p) == 0
    if len(p) < len(g) or (strict and len(p) != len(g)):
        return False
    good = pairwise_box_iou(p, g) > iou_threshold
    rows, cols = linear_sum_assignment(-good.astype(np.float64))  # max number of good pairs
    return int(good[rows, cols].sum()) == len(g)


def point_in_box(points, box) -> bool:
    """GUI accuracy for one sample: some point lies in ``box`` (borders included)."""
    b = as_boxes([box]) if box is not None else np.zeros((0, 4))
    pts = np.asarray(points if points is not None else [], dtype=np.float64).reshape(-1, 2)[:MAX_OBJECTS]
    if len(b) == 0 or len(pts) == 0:
        return False
    x1, y1, x2, y2 = b[0]
    inside = (pts[:, 0] >= x1) & (pts[:, 0] <= x2) & (pts[:, 1] >= y1) & (pts[:, 1] <= y2)
    return bool(inside.any())


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------
@dataclass
class GroundingSample:
    """What the grounding metrics need from one scored sample."""

    intersection: int
    union: int
    gt_empty: bool  # the label is `[]` (non-object sample)
    pred_empty: bool  # the prediction is a *valid* empty list
    hit: bool  # BboxAcc hit (see `bbox_hit`)

    @property
    def iou(self) -> float:
        """Per-sample IoU with the non-object rule of METHOD.md §5."""
        if self.gt_empty:
            return 1.0 if self.pred_empty else 0.0
        return self.intersection / self.union if self.union > 0 else 0.0


def grounding_metrics(samples: Sequence[GroundingSample]) -> dict:
    """gIoU, cIoU, BboxAcc, and N-Acc when the set has non-object samples; {} for no samples.

    ``notes`` (a list of strings) explains a value that is None.
    """
    if not samples:
        return {}
    inter = sum(s.intersection for s in samples)
    union = sum(s.union for s in samples)
    out = {
        "gIoU": float(np.mean([s.iou for s in samples])),
        "cIoU": inter / union if union > 0 else None,
        "BboxAcc": float(np.mean([s.hit for s in samples])),
    }
    empties = [s for s in samples if s.gt_empty]
    if empties:
        out["N-Acc"] = sum(s.pred_empty for s in empties) / len(empties)
    if union == 0:
        out["notes"] = ["cIoU undefined: no GT and no predicted pixels in the set (Σ union = 0)"]
    return out


def accuracy(hits: Iterable[bool]) -> float | None:
    """Share of true values; None for an empty set."""
    hits = list(hits)
    return float(np.mean(hits)) if hits else None


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> tuple[float | None, str | None]:
    """(ROC AUC, None), or (None, reason) when AUC is undefined (fewer than two classes / no data)."""
    from sklearn.metrics import roc_auc_score

    labels = [int(v) for v in labels]
    if not labels:
        return None, "ROC AUC undefined: no samples"
    classes = set(labels)
    if len(classes) < 2:
        kind = "anomalous (label 1)" if classes == {1} else "normal (label 0)"
        return None, f"ROC AUC undefined: only {kind} samples present, it needs both classes"
    return float(roc_auc_score(labels, [float(s) for s in scores])), None


def anomaly_metrics(labels: Sequence[int], predicted: Sequence[int]) -> dict:
    """Acc and ROC AUC of "any box predicted" (``predicted``) vs "the label has boxes" (``labels``)."""
    if not labels:
        return {}
    auc, note = roc_auc(labels, predicted)
    out = {"Acc": float(np.mean([int(p) == int(y) for p, y in zip(predicted, labels)])), "AUC": auc}
    if note:
        out["notes"] = [note]
    return out


def math_correct(answer: str | None, label: str, choices: Sequence[str] | None = None) -> bool:
    """Math accuracy of one extracted answer: exactly the training reward's rule
    (``verl_ext.rewards.math.answers_match``: normalised match, option letter or option text for
    multiple choice, then ``math_verify``), so evaluation and reward never disagree."""
    from verl_ext.rewards.math import answers_match

    if answer is None or not str(answer).strip():
        return False
    return answers_match(str(answer).strip(), str(label).strip(), [str(c) for c in choices] if choices else None)


@dataclass
class TextStats:
    """Format validity and lengths (whitespace words, as the public scripts count think length)."""

    format_valid: list[bool] = field(default_factory=list)
    resp_words: list[int] = field(default_factory=list)
    think_words: list[int] = field(default_factory=list)
    resp_tokens: list[int] = field(default_factory=list)

    def add(self, format_valid: bool, response: str, think: str | None, n_tokens: int | None = None) -> None:
        self.format_valid.append(bool(format_valid))
        self.resp_words.append(len(response.split()))
        self.think_words.append(len(think.split()) if think else 0)
        if n_tokens is not None:
            self.resp_tokens.append(int(n_tokens))

    def metrics(self) -> dict:
        if not self.format_valid:
            return {}
        out = {
            "format": float(np.mean(self.format_valid)),
            "resp_len": float(np.mean(self.resp_words)),
            "think_len": float(np.mean(self.think_words)),
        }
        if self.resp_tokens and len(self.resp_tokens) == len(self.format_valid):
            out["resp_tokens"] = float(np.mean(self.resp_tokens))
        return out
