"""GUI grounding accuracy (OmniACT), VisionReasoner ``evaluation/evaluation_gui.py``
``process_batch`` + ``evaluation/calculate_gui_acc.py`` ``calculate_metrics``.

* The clicked points are the answer's ``point_2d``s; when the public reader gets boxes but no
  points (``"points" not in result or len(result["points"]) == 0``), the centres of the boxes,
  ``[int((x1 + x2) / 2), int((y1 + y2) / 2)]``, stand in for them.
* A sample is correct when some point lies inside the GT element box, borders included
  (``b_x1 <= x <= b_x2 and b_y1 <= y <= b_y2``); Acc = correct / samples.

One extension under the project reader, because this project's GUI prompt asks for
``[{"point_2d": [x, y]}]`` only: the public reader needs a ``bbox_2d`` in every object (its
prompt, ``DETECTION_TEMPLATE``, asks for both) and reads nothing from a point-only answer; here
an answer from which the public reader gets no box is scored on its valid ``point_2d``s
(``ObjectAnswer.loose_points``). The public reader (``answers.read_public``) fills no loose
points, so under it a point-only answer is a miss, and its points are the public reader's
``int(x + 0.5)``-rounded integers.
"""

from __future__ import annotations

import numpy as np

from verl_ext.eval_protocols.answers import ObjectAnswer
from verl_ext.rewards.grounding import points_in_boxes


def box_centres(boxes) -> np.ndarray:
    """``[int((x1 + x2) / 2), int((y1 + y2) / 2)]`` per box (``evaluation_gui.py``)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.trunc(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)).reshape(-1, 2)


def clicked_points(ans: ObjectAnswer) -> np.ndarray:
    """The points a GUI answer clicks (module docstring)."""
    if len(ans.points):
        return ans.points
    if ans.has_boxes:
        return box_centres(ans.boxes)
    return ans.loose_points


def point_in_box(points, box) -> bool:
    """Some point inside ``box`` = ``[x1, y1, x2, y2]``, borders included; False without a box."""
    if box is None:
        return False
    pts = np.asarray(points if points is not None else [], dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return False
    return bool(points_in_boxes(pts, np.asarray(box, dtype=np.float64).reshape(4)).any())


def gui_hit(ans: ObjectAnswer, gt_box) -> bool:
    """One GUI sample: a clicked point inside the GT element box."""
    return point_in_box(clicked_points(ans), gt_box)
