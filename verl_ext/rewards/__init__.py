"""Task rewards for ViSurf, behind one verl custom-reward function.

``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`` has verl's
custom-reward signature (``reward.custom_reward_function.{path,name}``) and routes by
``data_source`` (``verl_ext.constants.DATA_SOURCE_TASK``):

=====================================================================  =========================
data_source                                                            scorer
=====================================================================  =========================
grefcoco, refcoco, refcoco+, refcocog, reasonseg, visurf_mix,          ``grounding`` (max 7)
synthetic_grounding
realiad (anomaly; normal image = ``[]``)                               ``grounding`` (max 7)
isic2018 (lesion)                                                      ``grounding`` (max 7)
omniact                                                                ``gui`` (max 4)
mathvista, geo3k, synthetic_math                                       ``math`` (max 2)
=====================================================================  =========================

Every scorer returns the same keys (``common.RESULT_KEYS``): ``score`` plus the components
``thinking_format``, ``answer_format``, ``accuracy``, ``non_repeat`` and ``invalid_reason``
(``""`` when the answer parsed), so verl can stack ``reward_extra_info`` over mixed batches.
verl 0.9.1's reward managers accept a dict with ``"score"`` and log the other keys.

``is_gt`` and ``gt_thinking_reward`` (docs/METHOD.md §3.2) and ``coords`` (the model's coordinate
convention, ``verl_ext.coords``; the reward manager puts the run's ``visurf.coords`` there) come from
keyword arguments or, failing that, from ``extra_info``; math reads ``extra_info["choices"]`` for
multiple choice.

Any other ``data_source`` is scored by verl's own ``default_compute_score``
(``verl.utils.reward_score``: ``openai/gsm8k``, ``lighteval/MATH``, ``hiyouga/geometry3k``, ...),
so verl's preprocessed parquet trains under ViSurf with verl's rewards; a source neither knows
raises ``ValueError(no_reward_message(...))`` naming the source and the two ways to fix it
(the recipe checks this at start-up, ``verl_ext.visurf.source_check``). A user's own
``reward.custom_reward_function`` replaces this whole function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from verl_ext.constants import DATA_SOURCE_TASK
from verl_ext.coords import DEFAULT_COORDS, EXTRA_INFO_KEY
from verl_ext.rewards import grounding, gui
from verl_ext.rewards import math as math_reward
from verl_ext.rewards.common import COMPONENTS, GT_THINKING_REWARD_MODES, RESULT_KEYS

__all__ = ["compute_score", "verl_compute_score", "no_reward_message", "scorer_for_task", "TASK_SCORERS",
           "COMPONENTS", "RESULT_KEYS", "GT_THINKING_REWARD_MODES"]

TASK_SCORERS: dict[str, Callable[..., dict]] = {
    "grounding": grounding.compute_score,
    "anomaly": grounding.compute_score,
    "lesion": grounding.compute_score,
    "gui": gui.compute_score,
    "math": math_reward.compute_score,
}


def scorer_for_task(task: str) -> Callable[..., dict]:
    """The ``compute_score(solution_str, ground_truth, *, is_gt, gt_thinking_reward, ...)`` of a task."""
    try:
        return TASK_SCORERS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_SCORERS)}") from None


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth,
    extra_info: Mapping | None = None,
    **kwargs,
) -> dict | float:
    """Score one response with the task reward of its ``data_source`` (verl custom-reward signature).

    Args:
        data_source: the parquet ``data_source``: one of the project's (table above), else one
            verl's ``default_compute_score`` scores; any other raises ValueError
            (``no_reward_message``).
        solution_str: the decoded response (any string; the scorers never raise for it).
        ground_truth: ``reward_model.ground_truth`` (see ``verl_ext.constants`` for the formats).
        extra_info: the row's ``extra_info`` (``choices`` for multiple choice; may carry
            ``is_gt`` / ``gt_thinking_reward``).
        **kwargs: ``is_gt`` (bool), ``gt_thinking_reward`` (``"zero"`` | ``"full"``), ``coords``
            (``"abs840"`` | ``"rel1000"``, default ``extra_info["coords"]``, else ``abs840``); other keys
            verl passes (``reward_router_address``, ...) are ignored.

    Returns:
        dict: ``score`` (float) and the keys in ``RESULT_KEYS``; for a source scored by verl,
        what verl's scorer returns (a float for most).
    """
    task = DATA_SOURCE_TASK.get(data_source)
    if task is None:
        return verl_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    scorer = scorer_for_task(task)
    extra = extra_info if isinstance(extra_info, Mapping) else {}
    is_gt = kwargs.get("is_gt", extra.get("is_gt", False))
    gt_thinking_reward = kwargs.get("gt_thinking_reward", extra.get("gt_thinking_reward", "zero"))
    coords = kwargs.get("coords", extra.get(EXTRA_INFO_KEY)) or DEFAULT_COORDS
    return scorer(
        solution_str,
        ground_truth,
        is_gt=as_flag(is_gt, "is_gt"),
        gt_thinking_reward=str(gt_thinking_reward),
        choices=extra.get("choices"),
        coords=str(coords),
    )


def as_flag(value, name: str) -> bool:
    """``value`` as a bool: True / False (numpy's too), 1 / 0, the strings "true" / "false" / "1" /
    "0" (any case), None (a parquet struct field absent from this row) as False. ValueError naming
    ``name`` otherwise — ``bool("false")`` is True, so a flag read from JSON or a CSV-born column
    must not go through ``bool``."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def no_reward_message(data_sources) -> str:
    """The error for data sources without a reward: names them and the two ways to fix it."""
    names = ", ".join(repr(s) for s in data_sources)
    return (
        f"unknown data_source {names}: no reward function scores it. It is neither one of this recipe's "
        f"data sources ({', '.join(sorted(DATA_SOURCE_TASK))}) nor one verl's default_compute_score scores "
        "(verl.utils.reward_score: openai/gsm8k, lighteval/MATH, hiyouga/geometry3k, ...). Fix it one of two ways: "
        "(1) set reward.custom_reward_function.path=/path/to/your_reward.py (and .name=<function>, default "
        "compute_score) to your function compute_score(data_source, solution_str, ground_truth, extra_info) -> "
        "float | dict; or (2) write the rows with a data_source verl or this recipe scores"
    )


def verl_compute_score(data_source: str, solution_str: str, ground_truth, extra_info: Mapping | None = None,
                       **kwargs):
    """verl's own ``default_compute_score(data_source, solution_str, ground_truth, extra_info)`` —
    the reward a plain verl run gives a source outside the project's table. The ViSurf keywords
    (``is_gt``, ``gt_thinking_reward``; also in ``extra_info``) are not passed on: verl's scorers do
    not know them. verl's ``NotImplementedError`` for an unknown source becomes
    ``ValueError(no_reward_message([data_source]))``."""
    from verl.utils.reward_score import default_compute_score

    for key in ("is_gt", "gt_thinking_reward", "coords"):
        kwargs.pop(key, None)
    try:
        return default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    except NotImplementedError:
        raise ValueError(no_reward_message([data_source])) from None
