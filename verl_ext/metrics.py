"""Shared pieces of the evaluation metrics (docs/METHOD.md §5): box geometry, mask IoU, text stats.

The scoring rules themselves — which answer counts as "no target", gIoU / cIoU / N-Acc / T-Acc /
BboxAcc, GUI and anomaly accuracy, the math protocols — live in ``verl_ext/eval_protocols/``, one
short module per public evaluation script (each names its script). Nothing here parses model
text: callers hand in boxes / masks / lengths (``recipe/visurf/eval_scoring.py`` reads responses
with ``verl_ext.rewards.parsing``).

* Coordinates live in the ``FRAME x FRAME`` frame. Swapped corners are put in order, boxes with a
  non-finite coordinate are dropped, at most ``MAX_OBJECTS`` boxes are used.
* Box rasterisation (the ``boxes`` / ``masks`` IoU basis when no segmenter is used; the public
  scripts use SAM masks instead) treats ``[x1, y1, x2, y2]`` as inclusive pixels x1..x2,
  y1..y2 — the convention of data_prep's boxes (from mask extents) and of the training reward
  (``verl_ext.constants``). BboxAcc does not rasterise: it uses the public box IoU formula
  ``(x2 - x1) * (y2 - y1)`` (``verl_ext.eval_protocols.grounding.box_iou``).
* Per-sample (intersection, union): the union of the predicted boxes against the union of the
  GT boxes on the frame, or against the GT mask when there is one (predicted boxes rasterised
  at the mask's resolution, or a segmenter's mask).
* Text stats: format validity, mean response / think length in whitespace words (the public
  scripts count think length with ``len(think.split())``), mean response tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from verl_ext.constants import FRAME, MAX_OBJECTS

# metric keys, in the order tables print them
METRIC_KEYS = ("gIoU", "cIoU", "N-Acc", "T-Acc", "BboxAcc", "Acc", "AUC", "format", "resp_len", "think_len")
FRACTION_KEYS = ("gIoU", "cIoU", "N-Acc", "T-Acc", "BboxAcc", "Acc", "AUC", "format")


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def as_boxes(boxes, limit: int | None = MAX_OBJECTS) -> np.ndarray:
    """``(N, 4)`` float array of ordered, finite boxes (x1 <= x2, y1 <= y2); at most ``limit``
    (None: all, as the public reader, which has no object limit)."""
    arr = np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 4)[:limit]
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


def rasterize_boxes(boxes, height: int = FRAME, width: int = FRAME, frame: int = FRAME,
                    limit: int | None = MAX_OBJECTS) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the union of ``boxes`` given in the ``frame`` frame.

    Boxes are inclusive pixel boxes (``verl_ext.constants``): ``[x1, y1, x2, y2]`` covers frame
    pixels x1..x2 and y1..y2, i.e. the area ``[x1, x2 + 1) x [y1, y2 + 1)``, scaled to the mask.
    Vectorised with a 2-D difference array (four scatter-adds per box, two cumulative sums),
    so the cost is O(height * width) whatever the number of boxes. ``limit``: as ``as_boxes``.
    """
    b = as_boxes(boxes, limit)
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
                       pred_mask: np.ndarray | None = None, limit: int | None = MAX_OBJECTS) -> tuple[int, int]:
    """Per-sample (intersection, union).

    Without ``gt_mask``: union of predicted boxes vs union of GT boxes, rasterised on the frame.
    With ``gt_mask`` (H x W): against the mask; the prediction is ``pred_mask`` when a segmenter
    produced one, else the predicted boxes rasterised at H x W. ``limit``: the most predicted
    boxes rasterised (``as_boxes``).
    """
    if gt_mask is None:
        return mask_intersection_union(rasterize_boxes(pred_boxes, limit=limit), rasterize_boxes(gt_boxes))
    gt_mask = np.asarray(gt_mask, dtype=bool)
    if pred_mask is None:
        pred_mask = rasterize_boxes(pred_boxes, height=gt_mask.shape[0], width=gt_mask.shape[1], limit=limit)
    return mask_intersection_union(pred_mask, gt_mask)


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------
def accuracy(hits: Iterable[bool]) -> float | None:
    """Share of true values; None for an empty set."""
    hits = list(hits)
    return float(np.mean(hits)) if hits else None


@dataclass
class TextStats:
    """Format validity and lengths (whitespace words, as the public scripts count think length)."""

    format_valid: list[bool] = field(default_factory=list)
    resp_words: list[int] = field(default_factory=list)
    think_words: list[int] = field(default_factory=list)
    resp_tokens: list[int] = field(default_factory=list)

    def add(self, format_valid: bool, response: str, think: str | None, n_tokens: int | None = None,
            count_think: bool = True) -> None:
        """One response. ``count_think=False`` leaves it out of ``think_len`` (the public scripts
        average think length only over items whose ``think`` is non-empty)."""
        self.format_valid.append(bool(format_valid))
        self.resp_words.append(len(response.split()))
        if count_think:
            self.think_words.append(len(think.split()) if think else 0)
        if n_tokens is not None:
            self.resp_tokens.append(int(n_tokens))

    def metrics(self) -> dict:
        if not self.format_valid:
            return {}
        out = {
            "format": float(np.mean(self.format_valid)),
            "resp_len": float(np.mean(self.resp_words)),
            "think_len": float(np.mean(self.think_words)) if self.think_words else None,
        }
        if self.resp_tokens and len(self.resp_tokens) == len(self.format_valid):
            out["resp_tokens"] = float(np.mean(self.resp_tokens))
        return out
