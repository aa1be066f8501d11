"""gIoU, cIoU, N-Acc, T-Acc and BboxAcc of grounding-style tasks (grounding, anomaly, lesion).

Public code each rule follows:

* per-sample IoU, gIoU, cIoU, N-Acc — VisionReasoner (= Seg-Zero)
  ``evaluation/calculate_iou_with_bbox_nonobj.py`` ``calculate_metrics`` on the records of
  ``evaluation/evaluation_segmentation.py`` ``process_batch``: IoU = I / U (0 when U = 0); a
  non-object sample answered "no target" scores 1 (``non_object``); gIoU = mean IoU; cIoU =
  ΣI / ΣU; N-Acc = Σ non_object / Σ non_object_GT. A non-object sample answered with boxes adds
  the predicted area to ΣU. ReLA ``gres_model/evaluation/refer_evaluation.py``
  ``ReferEvaluator.evaluate`` and LISA ``train_ds.py`` ``validate`` (``acc_iou[union == 0] += 1``)
  give the same values.
* T-Acc — ReLA ``ReferEvaluator.evaluate``: ``TN / (TN + FP)``, targeted samples answered with a
  target; reported when the set has both kinds of samples.
* BboxAcc — VisionReasoner ``evaluation_segmentation.py`` ``process_batch`` with
  ``compute_bbox_iou`` and ``merge_bboxes``: the GT box is the box of the GT (``get_bbox`` of the
  merged GT mask = the box enclosing all GT boxes); a sample is a hit when one predicted box,
  or the box enclosing all predicted boxes, has IoU > 0.5 with it. Non-object GT: a hit iff
  the answer says "no target". IoU here is the public formula: area ``(x2 - x1) * (y2 - y1)``,
  no "+1 pixel" (the training reward keeps its inclusive-pixel ``box_iou``, see
  ``verl_ext.constants``).

"No target" is decided by ``answers.says_no_target`` under the run's non-object rule; the
callers pass the decision in, so every metric of one report applies the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from verl_ext.constants import IOU_MATCH


def _boxes(boxes) -> np.ndarray:
    return np.asarray(boxes if boxes is not None else [], dtype=np.float64).reshape(-1, 4)


def box_iou(pred, gt) -> np.ndarray:
    """``(N, M)`` IoU of every predicted box with every GT box, VisionReasoner
    ``evaluation_segmentation.py`` ``compute_bbox_iou``: intersection
    ``max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))``, union ``a1 + a2 - inter``, 0 when
    the union is 0."""
    p, g = _boxes(pred)[:, None, :], _boxes(gt)[None, :, :]
    iw = np.maximum(np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]), 0.0)
    ih = np.maximum(np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]), 0.0)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    union = area_p + area_g - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union != 0, inter / np.where(union != 0, union, 1.0), 0.0)


def enclosing_box(boxes) -> np.ndarray | None:
    """The box enclosing all ``boxes`` (VisionReasoner ``merge_bboxes``), None when there are none."""
    b = _boxes(boxes)
    if len(b) == 0:
        return None
    return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])


def bbox_hit_public(pred_boxes, gt_boxes, no_target: bool, threshold: float = IOU_MATCH) -> bool:
    """BboxAcc of one sample, VisionReasoner's rule (module docstring)."""
    gt = enclosing_box(gt_boxes)
    if gt is None:
        return bool(no_target)
    pred = _boxes(pred_boxes)
    if len(pred) == 0:
        return False
    if bool((box_iou(pred, gt[None]) > threshold).any()):
        return True
    return bool(box_iou(enclosing_box(pred)[None], gt[None])[0, 0] > threshold)


def bbox_hit_matched(pred_boxes, gt_boxes, no_target: bool, threshold: float = IOU_MATCH) -> bool:
    """BboxAcc of one sample, the strict rule (ours, not public): as many predicted as GT boxes,
    matched one-to-one (Hungarian, maximising pairs with public ``box_iou`` > threshold), every
    pair above the threshold. Non-object GT: a hit iff the answer says "no target"."""
    from scipy.optimize import linear_sum_assignment

    pred, gt = _boxes(pred_boxes), _boxes(gt_boxes)
    if len(gt) == 0:
        return bool(no_target)
    if len(pred) != len(gt):
        return False
    good = box_iou(pred, gt) > threshold
    rows, cols = linear_sum_assignment(-good.astype(np.float64))
    return int(good[rows, cols].sum()) == len(gt)


@dataclass(frozen=True)
class GroundingSample:
    """The per-sample record of ``evaluation_segmentation.py``: I, U, the GT kind, the answer's
    decision and the BboxAcc hit."""

    intersection: int
    union: int
    gt_empty: bool  # non-object sample (label `[]`, empty GT mask)
    no_target: bool  # the answer says "no target" (answers.says_no_target under the run's rule)
    has_target: bool  # the answer names boxes
    hit: bool  # BboxAcc hit

    @property
    def iou(self) -> float:
        """``calculate_iou_with_bbox_nonobj.py``: 1 for a non-object sample answered "no target",
        else I / U (0 when U = 0)."""
        if self.gt_empty and self.no_target:
            return 1.0
        return self.intersection / self.union if self.union > 0 else 0.0


def grounding_metrics(samples: Sequence[GroundingSample]) -> dict:
    """gIoU, cIoU, BboxAcc; N-Acc when the set has non-object samples; T-Acc when it has both
    kinds; {} for no samples. cIoU of a set with ΣU = 0 (only non-object samples, all answered
    "no target") is None with a note (the public script prints 0 there,
    ``calculate_iou_with_bbox_nonobj.py`` line 79: 0/0 is undefined and 0 would read as a total
    miss). A set without non-object samples has no N-Acc (the public script prints 0, line 87).
    Both presets (``EvalProtocol``) apply these two rules."""
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
    targeted = [s for s in samples if not s.gt_empty]
    if empties:
        out["N-Acc"] = sum(s.no_target for s in empties) / len(empties)
        if targeted:
            out["T-Acc"] = sum(s.has_target for s in targeted) / len(targeted)
    if union == 0:
        out["notes"] = ["cIoU undefined: no GT and no predicted pixels in the set (Σ union = 0; "
                        "the public script prints 0)"]
    return out
