"""GT rendering (docs/METHOD.md §3.1): the text of the GT member of a group.

- `align_gt`: the GT response text in rollout style (§3.1); `render_gt`: the GT text of a row of
  any data_source (align_gt for the project's sources, `visurf.gt_template` around the label else).
- `gt_response`: `align_gt`, or the raw label in the template when alignment is off (the
  "no alignment" ablation); `VisurfConfig.gt_response` calls it with the config's switches.

The switches of all three strategies are fields of `verl_ext.visurf.config.VisurfConfig`;
reward smoothing (§3.3) is part of the group step, `verl_ext.visurf.group_step`; the GT
thinking-reward elimination (§3.2) is applied by the task scorers for rows flagged `is_gt`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from verl_ext.constants import ANSWER_TEMPLATE, BBOX_KEY, DATA_SOURCE_TASK, POINT_KEY, TASKS
from verl_ext.coords import DEFAULT_COORDS, from_frame
from verl_ext.rewards.labels import answer_label, is_missing, parse_task_label

__all__ = ["ANSWER_FIELD", "align_gt", "check_template", "gt_response", "label_start", "render_gt"]

_LABEL_REPR_CHARS = 200  # a bad label is quoted in the error message up to this many characters
ANSWER_FIELD = "{answer}"  # where the answer goes in an answer template (visurf.gt_template)


def check_template(template: Any) -> None:
    """ValueError unless ``template`` is a str containing ``{answer}`` exactly once."""
    if not isinstance(template, str) or template.count(ANSWER_FIELD) != 1:
        raise ValueError(f"answer template must contain {ANSWER_FIELD} exactly once, got {template!r}")


def label_start(template: str) -> int:
    """Where the label begins in a GT rendered with ``template``: the length of its part before
    ``{answer}`` (``render_gt`` and ``align_gt`` put the label there and nowhere else)."""
    check_template(template)
    return template.index(ANSWER_FIELD)


# --------------------------------------------------------------------------------------------
# §3.1 GT alignment
# --------------------------------------------------------------------------------------------
def _round_half_up(values: np.ndarray) -> list:
    """Coordinates as Python ints, rounded half up (``floor(v + 0.5)``, not banker's rounding)."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int64).tolist()


def _label_repr(ground_truth: Any) -> str:
    text = repr(ground_truth)
    return text if len(text) <= _LABEL_REPR_CHARS else text[: _LABEL_REPR_CHARS - 3] + "..."


def _aligned_answer(ground_truth: Any, task: str, coords: str = DEFAULT_COORDS) -> str:
    """The answer part of y' (before the template), coordinates in the model's convention ``coords``
    (``round_half_up(v_frame / frame_scale(coords))``); ValueError for a label the scorer rejects."""
    if is_missing(ground_truth):
        raise ValueError("no label (None or empty)")
    if task == "math":
        return answer_label(ground_truth)
    parsed = parse_task_label(ground_truth, task)  # the scorer's own reading of the label
    boxes, points = (_round_half_up(from_frame(parsed.boxes, coords)),
                     _round_half_up(from_frame(parsed.points, coords)))
    if task == "gui":
        return json.dumps([{POINT_KEY: points[0]}])
    return json.dumps([{BBOX_KEY: b, POINT_KEY: p} for b, p in zip(boxes, points, strict=True)])


def align_gt(ground_truth: Any, task: str, template: str = ANSWER_TEMPLATE, coords: str = DEFAULT_COORDS) -> str:
    """The GT response y' in the rollout's own style (docs/METHOD.md §3.1).

    y' = template(json.dumps(objects))  — objects with integer coordinates, keys bbox_2d then
    point_2d, json.dumps default separators (", " and ": ").

    grounding / anomaly / lesion: the label's objects (non-object `[]` -> `<answer>[]</answer>`);
    gui: `[{"point_2d": [x, y]}]` (the label's point); math: the canonical answer string,
    stripped. The label is read exactly as the task scorer reads it
    (`verl_ext.rewards.labels`): any accepted form (JSON string, list or numpy array of
    objects, one dict), coordinates clipped to [0, FRAME] and swapped corners reordered there,
    then converted to the model's coordinate convention ``coords`` (``verl_ext.coords``: the 840 frame
    itself for ``abs840``, ``v * 1000 / 840`` for ``rel1000``) and rounded half up here; so the GT
    scores full accuracy against its own label under the reward read in the same convention.

    Args:
        ground_truth: the label, `reward_model.ground_truth` (formats: verl_ext.constants).
        task: `(str)` one of `verl_ext.constants.TASKS`.
        template: `(str)` answer template containing `{answer}` once (default ANSWER_TEMPLATE).
        coords: `(str)` the model's coordinate convention (default the paper's `abs840`).

    Returns:
        `(str)` the GT response text (tokenised + EOS by the GT injection).

    Raises:
        ValueError: unknown task, bad template, or a bad label: `bad {task} label {label!r}: ` +
            the scorer's own message for it.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    check_template(template)
    try:
        answer = _aligned_answer(ground_truth, task, coords)
    except ValueError as e:
        raise ValueError(f"bad {task} label {_label_repr(ground_truth)}: {e}") from None
    return template.replace(ANSWER_FIELD, answer)


def render_gt(ground_truth: Any, data_source: str, *, align: bool = True, template: str = ANSWER_TEMPLATE,
              coords: str = DEFAULT_COORDS) -> str:
    """The GT response y' of one row, for any ``data_source``.

    * a source of the project's table (``DATA_SOURCE_TASK``) with ``align``: ``align_gt`` (coordinates
      in the model's convention ``coords``);
    * any other source (verl's GSM8K / MATH / Geometry3K parquet, a user's own data), or
      ``align=False``: the generic rendering ``template(answer_label(label))`` — the label
      (string, number or JSON-serialisable value) put into ``visurf.gt_template``, which the
      user sets to the answer convention of the reward: ``"#### {answer}"`` for verl's GSM8K,
      ``"\\boxed{{answer}}"`` for verl's MATH / Geometry3K.

    Raises ValueError (the label quoted) for a missing label or one that cannot be rendered.
    """
    check_template(template)
    task = DATA_SOURCE_TASK.get(data_source)
    if task is not None and align:
        return align_gt(ground_truth, task, template, coords)
    return _label_in_template(ground_truth, task or f"data_source={data_source!r}", template)


def _label_in_template(ground_truth: Any, what: str, template: str) -> str:
    """The generic rendering ``template(answer_label(label))``; ValueError ``bad {what} label ...``
    (the label quoted) for a missing label or one that is not a string, number or JSON value."""
    try:
        if is_missing(ground_truth):
            raise ValueError("no label (None or empty)")
        answer = answer_label(ground_truth)
    except ValueError as e:
        raise ValueError(f"bad {what} label {_label_repr(ground_truth)}: {e}") from None
    return template.replace(ANSWER_FIELD, answer)


# --------------------------------------------------------------------------------------------
# The GT response under the alignment switch
# --------------------------------------------------------------------------------------------
def gt_response(ground_truth: Any, task: str, *, align: bool = True, template: str = ANSWER_TEMPLATE,
                coords: str = DEFAULT_COORDS) -> str:
    """The GT response text for a label: `align_gt` (in the convention `coords`) when `align`, else the
    raw label in the template (the "no alignment" ablation: the label's own text, 840-frame
    coordinates whatever `coords`). ValueError (the label quoted) for a bad label."""
    if align:
        return align_gt(ground_truth, task, template, coords)
    check_template(template)
    return _label_in_template(ground_truth, task, template)
