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

Two readers (``ANSWER_READERS``, ``EvalProtocol.reader``):

* ``project`` (``read_objects``, the default preset): the JSON is decoded once by the project's
  parser (``verl_ext.rewards.parsing``, the training reward's): the response cut to 20,000
  characters, the last ``<answer>`` pair, at most ``MAX_OBJECTS`` objects, exactly 4 / 2 numbers
  (booleans are not numbers), coordinates clipped to the frame, swapped corners ordered, floats
  kept. Every difference from the public reader is listed in ``recipe/visurf/EVALUATION.md``.
* ``visionreasoner`` (``read_public``, the ``--protocol visionreasoner`` preset): the public
  reader itself: the first answer block, Python's ``json.loads``, each coordinate
  ``int(v * factor + 0.5)`` evaluated as the public line does (so booleans count as 1 / 0, a
  string or a list is an error, extra numbers are ignored), no clipping, no corner ordering,
  no length cut, no object limit; boxes without points give no mask (``mask_boxes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

ANSWER_READERS = ("project", "visionreasoner")
_OPEN, _CLOSE = "<answer>", "</answer>"


@dataclass(frozen=True)
class ObjectAnswer:
    """One object answer as the metrics see it (coordinates in the FRAME x FRAME frame)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # all objects' boxes, or none
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # all objects' points, or none
    is_empty_list: bool = False  # the answer is a well-formed `[]`
    loose_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # every valid point_2d, per object
    masks_need_points: bool = False  # the public SAM2 step: boxes without points give an empty mask

    @property
    def has_boxes(self) -> bool:
        """The answer names at least one box (the public 'target' decision)."""
        return len(self.boxes) > 0

    @property
    def mask_boxes(self) -> np.ndarray:
        """The boxes that produce a predicted mask. Project reader: every box. Public reader
        (``masks_need_points``): VisionReasoner ``visurf_model.py`` ``generate_masks`` ORs a SAM2
        mask per box only when points were read (lines 222-232); boxes without points are
        predicted but never OR-ed in (lines 233-239), so the mask stays empty."""
        if self.masks_need_points and len(self.points) == 0:
            return np.zeros((0, 4))
        return self.boxes


def read_objects(objs) -> ObjectAnswer:
    """``ObjectAnswer`` of a ``verl_ext.rewards.parsing.ParsedObjects`` (module docstring rules)."""
    n = len(objs)
    boxes = objs.boxes if (objs.valid and n > 0 and bool(objs.box_valid.all())) else np.zeros((0, 4))
    points = objs.points if (len(boxes) > 0 and bool(objs.point_valid.all())) else np.zeros((0, 2))
    loose = objs.points[objs.point_valid] if n else np.zeros((0, 2))
    return ObjectAnswer(boxes=np.asarray(boxes, dtype=np.float64), points=np.asarray(points, dtype=np.float64),
                        is_empty_list=bool(objs.is_empty_list), loose_points=np.asarray(loose, dtype=np.float64))


def first_answer_block(text: str) -> str | None:
    """VisionReasoner ``visurf_model.py`` line 129, ``re.search(r'<answer>\\s*(.*?)\\s*</answer>',
    text, re.DOTALL).group(1)``: from the **first** ``<answer>`` to the first ``</answer>`` after
    it, surrounding whitespace removed (``\\s`` is ``str.isspace``, as ``str.strip``); None when
    there is no such pair. Written with ``str.find`` so it stays linear where the regex
    backtracks quadratically (a long whitespace run, many unclosed tags)."""
    start = text.find(_OPEN)
    if start < 0:
        return None
    end = text.find(_CLOSE, start + len(_OPEN))
    if end < 0:
        return None
    return text[start + len(_OPEN):end].strip()


def _public_coords(data, key: str, n: int, factor: float) -> list[list[int]]:
    """``[[int(item[key][k] * factor + 0.5) for k < n] for item in data]`` — the comprehension of
    ``visurf_model.py`` lines 139-148; any exception propagates (the caller's ``except``)."""
    return [[int(item[key][k] * factor + 0.5) for k in range(n)] for item in data]


def read_public(response: str, factor: float = 1.0) -> ObjectAnswer:
    """The ``ObjectAnswer`` the public reader gets from a full response, VisionReasoner
    ``vision_reasoner/models/visurf_model.py`` ``extract_bbox_points_think`` (lines 129-150):

    * the answer is ``first_answer_block`` (line 129), decoded with ``json.loads`` (line 137,
      NaN / Infinity accepted as Python's json does);
    * boxes = ``[[int(item['bbox_2d'][k] * x_factor + 0.5) for k in 0..3] for item in data]``
      (lines 139-144), then points the same with ``point_2d`` and 2 coordinates (lines 145-148),
      both in one ``try`` whose ``except Exception`` only prints (lines 149-150). So: one broken
      object and no box is read; a box list read stays when the points fail; extra numbers are
      ignored (a 5-number box, a 3-number point); ``true`` / ``false`` are 1 / 0
      (``True * x_factor``); a string, ``null`` or a list as a coordinate, too few numbers, NaN
      or ±inf (``int()`` fails) void the list; a dict answer iterates its keys (strings: error)
      unless it is empty; the coordinates are rounded (``int(x + 0.5)``, toward zero for
      negatives), not clipped, corners not ordered; no length cut, no object limit.
    * ``factor``: the public ``x_factor = y_factor = W / 840`` maps the 840-frame answer to the
      original image. This project scores in the 840 frame (its labels; data_prep stores the
      images at 840 x 840), where the factor is 1 for a model answering in absolute 840-frame pixels
      and ``verl_ext.coords.frame_scale("rel1000")`` = 840 / 1000 for one answering relative 0-1000
      (Qwen3-VL): the same line maps either answer into the frame.
    * ``masks_need_points`` is set: see ``ObjectAnswer.mask_boxes``.
    """
    empty = ObjectAnswer(masks_need_points=True)
    block = first_answer_block(response)
    if block is None:
        return empty
    data, boxes, points = None, [], []
    try:
        data = json.loads(block)
        boxes = _public_coords(data, "bbox_2d", 4, factor)
        points = _public_coords(data, "point_2d", 2, factor)
    except Exception:  # noqa: BLE001 — the public reader catches everything and goes on (line 149)
        pass
    is_empty_list = isinstance(data, list) and len(data) == 0
    return ObjectAnswer(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                        points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
                        is_empty_list=is_empty_list, masks_need_points=True)


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
