"""What an object answer contributes to the metrics, read the way the public evaluation reads it.

Follows VisionReasoner ``vision_reasoner/models/visurf_model.py`` ``extract_bbox_points_think``
(the parser of every public localisation script: ``evaluation_segmentation.py``,
``evaluation_gui.py``, ``evaluation_anomaly.py``):

* the answer is JSON-decoded; the boxes are ``[item["bbox_2d"] for item in data]`` inside one
  ``try``: one object without a usable box and **no box at all** is read (all-or-nothing);
* the points are read the same way, after the boxes: no boxes → no points; one object
  without a usable point → no points (the boxes stay);
* anything that fails to decode gives no boxes and no points — the public code prints the
  error and goes on, so an unparseable answer is "no boxes".

The JSON itself is decoded once by the project's parser (``verl_ext.rewards.parsing``: the last
``<answer>`` pair; coordinates clipped to the frame, swapped corners ordered). Residual
differences from the public reader, all on answers a trained model rarely writes: the public
code takes the *first* ``<answer>…</answer>``, accepts a ``bbox_2d`` with more than 4 numbers
(uses the first 4), does not clip, and rounds coordinates to integers of the original image
(``int(x * factor + 0.5)``), which box IoU ignores up to that rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ObjectAnswer:
    """One object answer as the metrics see it (coordinates in the FRAME x FRAME frame)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # all objects' boxes, or none
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # all objects' points, or none
    is_empty_list: bool = False  # the answer is a well-formed `[]`
    loose_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # every valid point_2d, per object

    @property
    def has_boxes(self) -> bool:
        """The answer names at least one box (the public 'target' decision)."""
        return len(self.boxes) > 0


def read_objects(objs) -> ObjectAnswer:
    """``ObjectAnswer`` of a ``verl_ext.rewards.parsing.ParsedObjects`` (module docstring rules)."""
    n = len(objs)
    boxes = objs.boxes if (objs.valid and n > 0 and bool(objs.box_valid.all())) else np.zeros((0, 4))
    points = objs.points if (len(boxes) > 0 and bool(objs.point_valid.all())) else np.zeros((0, 2))
    loose = objs.points[objs.point_valid] if n else np.zeros((0, 2))
    return ObjectAnswer(boxes=np.asarray(boxes, dtype=np.float64), points=np.asarray(points, dtype=np.float64),
                        is_empty_list=bool(objs.is_empty_list), loose_points=np.asarray(loose, dtype=np.float64))


def says_no_target(ans: ObjectAnswer, rule: str = "public") -> bool:
    """Did the answer say "nothing here"?

    ``public``: no box was read (VisionReasoner ``evaluation_segmentation.py`` ``process_batch``:
    ``non_object = gt_mask.sum() == 0 and len(bboxes) == 0``). ``strict``: the answer is a
    well-formed ``[]``.
    """
    if rule == "public":
        return not ans.has_boxes
    if rule == "strict":
        return ans.is_empty_list
    raise ValueError(f"unknown non-object rule {rule!r}; known: public, strict")
