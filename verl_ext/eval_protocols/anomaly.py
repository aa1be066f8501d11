"""Anomaly detection (Real-IAD) Acc and ROC AUC, VisionReasoner ``evaluation/evaluation_anomaly.py``
``process_batch`` + ``evaluation/calculate_acc_auc.py`` ``calculate_metrics``.

* Public: ``anomaly_pred`` = predicted mask area / image area, ``anomaly_label`` = the GT mask is
  non-empty; Acc = mean of ``int(anomaly_pred > 0) == anomaly_label``; AUC =
  ``sklearn.metrics.roc_auc_score(labels, anomaly_pred > 0)`` (a binary score).
* Here the prediction is "anomalous" when the answer's boxes produce a mask
  (``ObjectAnswer.mask_boxes``; the public mask is the union of SAM masks of those boxes, taken
  as non-empty whenever SAM2 is prompted). Project reader: every box. Public reader: only boxes
  read with their points — the public ``generate_masks`` ORs no mask for boxes without points,
  so such an answer scores "normal" (``anomaly_pred`` = 0).
* One rule for an answer that names no box, the run's non-object rule
  (``answers.says_no_target``), used by Acc, AUC, N-Acc and gIoU alike:
  ``public`` — it says "normal" (the public reader gets no boxes, so the mask is empty);
  ``strict`` — only a well-formed ``[]`` says "normal"; any other boxless answer is scored as
  the wrong decision (score ``1 - label``) for Acc and AUC, and as a miss for N-Acc and gIoU.
* AUC with one class only is undefined: None with a note. The public script prints the
  sklearn error, sets ``roc_auc = None`` (``calculate_acc_auc.py`` lines 64-70) and then crashes
  formatting it (line 75, ``f"{roc_auc:.4f}"`` on None) after printing Acc; every preset
  reports Acc and ``AUC: null`` with the reason instead of stopping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verl_ext.eval_protocols.answers import ObjectAnswer, says_no_target


def anomaly_score(ans: ObjectAnswer, anomalous: bool, rule: str = "public") -> int:
    """The binary "anomalous" score of one answer (1 = its boxes make a mask) under ``rule`` (module docstring)."""
    if len(ans.mask_boxes):
        return 1
    if ans.has_boxes:  # public reader: boxes without points, an empty mask (anomaly_pred = 0)
        return 0
    if says_no_target(ans, rule):
        return 0
    return 0 if anomalous else 1  # strict: an unreadable answer is the wrong decision


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


def anomaly_metrics(labels: Sequence[int], scores: Sequence[int]) -> dict:
    """Acc and ROC AUC of the binary ``scores`` against ``labels`` (1 = anomalous); {} for no samples."""
    if not labels:
        return {}
    auc, note = roc_auc(labels, scores)
    out = {"Acc": float(np.mean([int(s > 0) == int(y) for s, y in zip(scores, labels)])), "AUC": auc}
    if note:
        out["notes"] = [note]
    return out
