"""GUI grounding reward (OmniACT): click a point inside the target element.

``score = thinking_format + answer_format + accuracy + non_repeat`` (max 4):

* thinking_format (0/1): as for grounding (0 for a GT row when ``gt_thinking_reward="zero"``).
* answer_format (0/1): the answer is a JSON list of exactly one object whose ``point_2d`` is a
  list of 2 finite numbers (``[{"point_2d": [x, y]}]``; a ``bbox_2d`` next to it is ignored).
* accuracy (0/1): the first object's point lies inside the label's element box (borders
  included, coordinates clipped to the frame as in ``parsing``). Extra objects never help: only
  the first point is read, and they cost the answer-format reward.
* non_repeat (0/1): see ``parsing.non_repeat``.

The label is ``[{"bbox_2d": element box, "point_2d": element centre}]`` (exactly one object), in the
840 frame; the answer's point is in the model's convention ``coords`` and read into the frame first
(``verl_ext.coords.frame_scale``).
"""

from __future__ import annotations

from verl_ext.coords import DEFAULT_COORDS, frame_scale
from verl_ext.rewards.common import thinking_reward
from verl_ext.rewards.labels import parse_task_label
from verl_ext.rewards.parsing import non_repeat, parse_objects, parse_response

__all__ = ["MAX_SCORE", "compute_score"]

MAX_SCORE = 4.0


def compute_score(
    solution_str: str,
    ground_truth: str | list,
    *,
    is_gt: bool = False,
    gt_thinking_reward: str = "zero",
    coords: str = DEFAULT_COORDS,
    **kwargs,
) -> dict:
    """GUI reward of one response (module docstring for the definition).

    Args:
        solution_str: the decoded response; any string (never raises for it).
        ground_truth: JSON list with exactly one object (the element box + centre). A malformed
            label raises ValueError (data bug).
        is_gt: the row is the injected ground-truth response (docs/METHOD.md §3.2).
        gt_thinking_reward: ``"zero"`` or ``"full"``.
        coords: the convention of the answer's point (``verl_ext.coords``; default ``abs840``).

    Returns:
        dict with ``score`` and ``thinking_format``, ``answer_format``, ``accuracy``,
        ``non_repeat`` (floats), ``invalid_reason`` (str).
    """
    gt = parse_task_label(ground_truth, "gui")  # the label as the GT renderer reads it too
    resp = parse_response(solution_str)
    pred = parse_objects(resp.answer, scale=frame_scale(coords))
    thinking = thinking_reward(resp.think_format, is_gt=is_gt, gt_thinking_reward=gt_thinking_reward)
    has_point = pred.valid and len(pred) >= 1 and bool(pred.point_valid[0])
    fmt = 1.0 if has_point and len(pred) == 1 else 0.0
    acc = 0.0
    if has_point:
        x, y = pred.points[0]
        x1, y1, x2, y2 = gt.boxes[0]
        acc = 1.0 if (x1 <= x <= x2 and y1 <= y <= y2) else 0.0
    if not pred.valid:
        reason = pred.reason
    elif len(pred) == 0:
        reason = "no_point"
    elif not pred.point_valid[0]:
        reason = next((r for r in pred.reasons if r.startswith("point_") or r == "object_not_dict"), "point_invalid")
    elif len(pred) > 1:
        reason = "extra_objects"
    else:
        reason = ""
    rep = non_repeat(resp.text)
    return {
        "score": thinking + fmt + acc + rep,
        "thinking_format": thinking,
        "answer_format": fmt,
        "accuracy": acc,
        "non_repeat": rep,
        "invalid_reason": reason,
    }
