"""GT rendering (METHOD.md §3.1): the text of the GT member of a group.

- `align_gt`: the GT response text in rollout style (§3.1).
- `gt_response`: `align_gt`, or the raw label in the template when alignment is off (the
  "no alignment" ablation); `VisurfConfig.gt_response` calls it with the config's switches.

The switches of all three strategies are fields of `verl_ext.visurf.config.VisurfConfig`;
reward smoothing (§3.3) is part of the group step, `verl_ext.visurf.group_step`; the GT
thinking-reward elimination (§3.2) is applied by the task scorers for rows flagged `is_gt`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from verl_ext.constants import ANSWER_TEMPLATE, BBOX_KEY, FRAME, POINT_KEY, TASKS
from verl_ext.visurf.config import ANSWER_FIELD as _ANSWER_FIELD
from verl_ext.visurf.config import check_template as _check_template

__all__ = ["align_gt", "gt_response"]

OBJECT_TASKS = ("grounding", "anomaly", "lesion")  # answer: list of {bbox_2d, point_2d} objects
_LABEL_REPR_CHARS = 200  # a bad label is quoted in the error message up to this many characters


# --------------------------------------------------------------------------------------------
# §3.1 GT alignment
# --------------------------------------------------------------------------------------------
class _BadLabel(ValueError):
    """What is wrong with a label (re-raised by `align_gt` with the label quoted)."""


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _coords(obj: Mapping, key: str, n: int) -> list[int]:
    """obj[key] as n integer coordinates in the FRAME x FRAME frame (round half up)."""
    raw = obj[key]
    if not isinstance(raw, list) or len(raw) != n:
        raise _BadLabel(f"{key} must be a list of {n} numbers, got {raw!r}")
    for c in raw:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise _BadLabel(f"{key} must hold finite numbers, got {raw!r}")
        if not 0 <= c <= FRAME:
            raise _BadLabel(f"{key} coordinate {c!r} outside the {FRAME}x{FRAME} frame")
    coords = [_round_half_up(c) for c in raw]
    if key == BBOX_KEY and (coords[0] > coords[2] or coords[1] > coords[3]):
        raise _BadLabel(f"{key} must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got {raw!r}")
    return coords


def _parse_objects(ground_truth: str) -> list[dict[str, list[int]]]:
    """A JSON list of label objects -> [{bbox_2d?, point_2d?}] with integer coordinates."""
    try:
        objects = json.loads(ground_truth)
    except json.JSONDecodeError as e:
        raise _BadLabel(f"not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(objects, list):
        raise _BadLabel(f"must be a JSON list of objects, got {type(objects).__name__}")
    parsed = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise _BadLabel(f"object {i} must be a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {BBOX_KEY, POINT_KEY}
        if unknown:
            raise _BadLabel(f"object {i} has unknown keys {sorted(unknown)}")
        if not obj:
            raise _BadLabel(f"object {i} has neither {BBOX_KEY} nor {POINT_KEY}")
        try:
            parsed.append({key: _coords(obj, key, n) for key, n in ((BBOX_KEY, 4), (POINT_KEY, 2)) if key in obj})
        except _BadLabel as e:
            raise _BadLabel(f"object {i}: {e}") from None
    return parsed


def _scoreable(ground_truth: str) -> None:
    """The task scorer must accept the label too (it requires e.g. a point on every object):
    a GT the reward cannot score is a bad label here, not a crash in the reward worker."""
    from verl_ext.rewards.parsing import parse_label

    try:
        parse_label(ground_truth)
    except ValueError as e:
        raise _BadLabel(f"the reward's label parser rejects it: {e}") from None


def _gui_answer(objects: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
    """The one GUI element -> [{point_2d}] (its point; the scorer requires box and point)."""
    if len(objects) != 1:
        raise _BadLabel(f"a gui label must hold exactly one object, got {len(objects)}")
    (obj,) = objects
    if POINT_KEY not in obj:
        raise _BadLabel(f"the gui element has no {POINT_KEY}")
    return [{POINT_KEY: obj[POINT_KEY]}]


def _label_repr(ground_truth: Any) -> str:
    text = repr(ground_truth)
    return text if len(text) <= _LABEL_REPR_CHARS else text[: _LABEL_REPR_CHARS - 3] + "..."


def align_gt(ground_truth: str, task: str, template: str = ANSWER_TEMPLATE) -> str:
    """The GT response y' in the rollout's own style (METHOD.md §3.1).

    y' = template(json.dumps(objects))  — objects with integer coordinates, keys bbox_2d then
    point_2d, json.dumps default separators (", " and ": ").

    grounding / anomaly / lesion: the label's objects (non-object `[]` -> `<answer>[]</answer>`);
    gui: `[{"point_2d": [x, y]}]` (the label's point); math: the
    canonical answer string, stripped. Coordinates are rounded half up.

    Args:
        ground_truth: `(str)` the label, `reward_model.ground_truth` (formats: verl_ext.constants).
        task: `(str)` one of `verl_ext.constants.TASKS`.
        template: `(str)` answer template containing `{answer}` once (default ANSWER_TEMPLATE).

    Returns:
        `(str)` the GT response text (tokenised + EOS by the GT injection).

    Raises:
        ValueError: unknown task, bad template, or a bad label (the message quotes the label and
            says what is wrong).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    _check_template(template)
    try:
        if not isinstance(ground_truth, str):
            raise _BadLabel(f"must be a str, got {type(ground_truth).__name__}")
        if task == "math":
            answer = ground_truth.strip()
            if not answer:
                raise _BadLabel("empty math answer")
        else:
            objects = _parse_objects(ground_truth)
            answer = json.dumps(_gui_answer(objects) if task == "gui" else objects)
            _scoreable(ground_truth)
    except _BadLabel as e:
        raise ValueError(f"bad {task} label {_label_repr(ground_truth)}: {e}") from None
    return template.replace(_ANSWER_FIELD, answer)


# --------------------------------------------------------------------------------------------
# The GT response under the alignment switch
# --------------------------------------------------------------------------------------------
def gt_response(ground_truth: Any, task: str, *, align: bool = True, template: str = ANSWER_TEMPLATE) -> str:
    """The GT response text for a label: `align_gt` when `align`, else the raw label in the
    template (the "no alignment" ablation). ValueError (the label quoted) for a bad label."""
    if align:
        return align_gt(ground_truth, task, template)
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(f"bad {task} label {_label_repr(ground_truth)}: must be a non-empty str")
    return template.replace(_ANSWER_FIELD, ground_truth.strip())
