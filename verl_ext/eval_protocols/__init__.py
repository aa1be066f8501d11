"""Scoring protocols of the evaluation, one short module per public script.

Each module re-implements (our code, not a copy) the rules of the public evaluation code that
the paper's numbers come from, and names the file + function every rule follows:

* ``answers``   — what a response contributes: VisionReasoner ``extract_bbox_points_think``
  (``vision_reasoner/models/visurf_model.py``): boxes are read all-or-nothing, an unreadable
  answer is "no boxes".
* ``grounding`` — gIoU, cIoU, N-Acc, T-Acc, BboxAcc: VisionReasoner
  ``evaluation/evaluation_segmentation.py`` + ``evaluation/calculate_iou_with_bbox_nonobj.py``
  (= Seg-Zero's), ReLA ``gres_model/evaluation/refer_evaluation.py``, LISA ``train_ds.py::validate``.
* ``gui``       — click accuracy: VisionReasoner ``evaluation/evaluation_gui.py`` + ``calculate_gui_acc.py``.
* ``anomaly``   — Acc / ROC AUC: VisionReasoner ``evaluation/evaluation_anomaly.py`` + ``calculate_acc_auc.py``.
* ``math``      — three protocols: ``mathverify`` (the training reward's rule), ``mathvista``
  (MathVista ``evaluation/calculate_score.py``), ``visionreasoner`` (VisionReasoner
  ``evaluation/evaluation_math.py`` + ``calculate_math_acc.py``).

``EvalProtocol`` holds the choices a run makes; ``EvalProtocol.describe()`` is what the report
prints, so every number says which rule produced it. Public repositories: dvlab-research /
JIA-Lab-research ``VisionReasoner`` and ``Seg-Zero``, ``henghuiding/ReLA``,
``dvlab-research/LISA``, ``lupantech/MathVista``.
"""

from __future__ import annotations

from dataclasses import dataclass

NON_OBJECT_RULES = ("public", "strict")
BBOX_ACC_RULES = ("public", "strict")
MATH_PROTOCOLS = ("mathverify", "mathvista", "visionreasoner")


@dataclass(frozen=True)
class EvalProtocol:
    """The scoring choices of one evaluation run (defaults: the public rules).

    * ``non_object``: ``public`` — an answer from which no box is read (``[]``, unparseable,
      a list with a broken box) says "no target" (VisionReasoner ``evaluation_segmentation.py``
      ``non_object = gt empty and len(bboxes) == 0``); ``strict`` — only a well-formed ``[]``
      says "no target", and an answer that is neither ``[]`` nor boxes is wrong for every metric.
    * ``bbox_acc``: ``public`` — VisionReasoner's rule (``grounding.bbox_hit_public``);
      ``strict`` — every GT box matched one-to-one, no extra boxes (ours, not public).
    * ``math``: one of ``MATH_PROTOCOLS`` (``math.score``).
    """

    non_object: str = "public"
    bbox_acc: str = "public"
    math: str = "mathverify"

    def __post_init__(self):
        for name, value, known in (("non_object", self.non_object, NON_OBJECT_RULES),
                                   ("bbox_acc", self.bbox_acc, BBOX_ACC_RULES),
                                   ("math", self.math, MATH_PROTOCOLS)):
            if value not in known:
                raise ValueError(f"unknown {name} rule {value!r}; known: {', '.join(known)}")

    def describe(self) -> dict[str, str]:
        """Rule name -> the rule and the public script it follows (printed in the report)."""
        from verl_ext.eval_protocols import math as math_protocol

        non_object = {
            "public": "public: no box read from the answer (`[]`, unparseable, broken box) = 'no target' "
                      "(VisionReasoner evaluation_segmentation.py process_batch + "
                      "calculate_iou_with_bbox_nonobj.py; ReLA refer_evaluation.py; LISA validate)",
            "strict": "strict (not public): only a well-formed `[]` = 'no target'; an answer that is neither "
                      "`[]` nor boxes is wrong for gIoU, N-Acc, T-Acc, BboxAcc, anomaly Acc/AUC",
        }[self.non_object]
        bbox = {
            "public": "public: IoU > 0.5 of one predicted box, or of the box enclosing all predicted boxes, with "
                      "the box enclosing all GT boxes; IoU (x2-x1)(y2-y1), no +1 "
                      "(VisionReasoner evaluation_segmentation.py compute_bbox_iou / merge_bboxes)",
            "strict": "strict (not public): every GT box matched one-to-one (IoU > 0.5, public IoU formula), "
                      "as many predicted as GT boxes",
        }[self.bbox_acc]
        return {
            "non_object": non_object,
            "BboxAcc": bbox,
            "gui": "VisionReasoner evaluation_gui.py process_batch: a predicted point (else the box centre) "
                   "inside the GT box, borders included",
            "anomaly": "VisionReasoner evaluation_anomaly.py + calculate_acc_auc.py: anomalous = boxes predicted; "
                       "the non_object rule decides unreadable answers for Acc, AUC, N-Acc and gIoU alike",
            "math": f"{self.math}: {math_protocol.PROTOCOL_SOURCES[self.math]}",
        }
