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
prints, so every number says which rule produced it. ``PRESETS`` names whole sets of choices
(``--protocol``): ``project`` (the default: the project's answer reader, the public metric
arithmetic, the training reward's math rule) and ``visionreasoner`` (the public VisionReasoner
evaluation end to end: its answer reader, its arithmetic, its math rule); the individual
options override a preset's fields. Public repositories: dvlab-research /
JIA-Lab-research ``VisionReasoner`` and ``Seg-Zero``, ``henghuiding/ReLA``,
``dvlab-research/LISA``, ``lupantech/MathVista``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from verl_ext.eval_protocols.answers import ANSWER_READERS

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
    * ``reader``: one of ``ANSWER_READERS`` — how boxes / points are read from a response
      (``answers``): ``project`` (the training reward's parser) or ``visionreasoner`` (the public
      ``extract_bbox_points_think``, with the public SAM2 step's "no points, no mask" and the
      public think length: words of the whole response, over the non-empty ones).
    """

    non_object: str = "public"
    bbox_acc: str = "public"
    math: str = "mathverify"
    reader: str = "project"

    def __post_init__(self):
        for name, value, known in (("non_object", self.non_object, NON_OBJECT_RULES),
                                   ("bbox_acc", self.bbox_acc, BBOX_ACC_RULES),
                                   ("math", self.math, MATH_PROTOCOLS),
                                   ("reader", self.reader, ANSWER_READERS)):
            if value not in known:
                raise ValueError(f"unknown {name} rule {value!r}; known: {', '.join(known)}")

    def options(self) -> dict[str, str]:
        """The choices as ``{field: value}`` (``metrics.json["protocol"]["options"]``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def preset(self) -> str:
        """The name of the preset these choices equal, else ``"custom"``."""
        return next((name for name, p in PRESETS.items() if p == self), "custom")

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
        public = self.reader == "visionreasoner"
        reader = {
            "project": "project: the training reward's parser (verl_ext/rewards/parsing.py: response cut to 20,000 "
                       "characters, last <answer>, at most 120 objects, exactly 4 / 2 numbers, clipped to the frame, "
                       "corners ordered), read all-or-nothing as VisionReasoner visurf_model.py "
                       "extract_bbox_points_think; think_len = words inside <think>",
            "visionreasoner": "visionreasoner: VisionReasoner visurf_model.py extract_bbox_points_think itself (first "
                              "<answer>, json.loads, int(x + 0.5) in the 840 frame, booleans as 1/0, extra numbers "
                              "ignored, no clipping / ordering / cut); boxes without points give no mask "
                              "(generate_masks); think_len = words of the whole response over the non-empty "
                              "ones (calculate_*.py)",
        }[self.reader]
        gui = ("VisionReasoner evaluation_gui.py process_batch + calculate_gui_acc.py: a predicted point (else the "
               "int box centre) inside the GT box, borders included")
        anomaly = ("VisionReasoner evaluation_anomaly.py + calculate_acc_auc.py: anomalous = a non-empty predicted "
                   "mask (here: boxes" + (" with points" if public else "") + "); the non_object rule decides "
                   "unreadable answers for Acc, AUC, N-Acc and gIoU alike; one class only: AUC null (the public "
                   "script crashes printing None)")
        return {
            "reader": reader,
            "non_object": non_object,
            "BboxAcc": bbox,
            "gui": gui + ("" if public else "; extension: point-only answers are scored on their points"),
            "anomaly": anomaly,
            "math": f"{self.math}: {math_protocol.PROTOCOL_SOURCES[self.math]}",
        }


PRESETS: dict[str, EvalProtocol] = {
    "project": EvalProtocol(),
    "visionreasoner": EvalProtocol(reader="visionreasoner", math="visionreasoner"),
}


def preset(name: str, **overrides) -> EvalProtocol:
    """The preset ``name`` (``PRESETS``) with the non-None ``overrides`` (field -> value) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown protocol preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
