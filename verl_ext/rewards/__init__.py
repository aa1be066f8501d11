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

``is_gt`` and ``gt_thinking_reward`` (METHOD.md §3.2) come from keyword arguments or, failing
that, from ``extra_info``; math reads ``extra_info["choices"]`` for multiple choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from verl_ext.constants import task_of
from verl_ext.rewards import grounding, gui
from verl_ext.rewards import math as math_reward
from verl_ext.rewards.common import COMPONENTS, GT_THINKING_REWARD_MODES, RESULT_KEYS

__all__ = ["compute_score", "scorer_for_task", "TASK_SCORERS", "COMPONENTS", "RESULT_KEYS", "GT_THINKING_REWARD_MODES"]

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
) -> dict:
    """Score one response with the task reward of its ``data_source`` (verl custom-reward signature).

    Args:
        data_source: the parquet ``data_source``; unknown values raise ValueError naming the
            known ones.
        solution_str: the decoded response (any string; the scorers never raise for it).
        ground_truth: ``reward_model.ground_truth`` (see ``verl_ext.constants`` for the formats).
        extra_info: the row's ``extra_info`` (``choices`` for multiple choice; may carry
            ``is_gt`` / ``gt_thinking_reward``).
        **kwargs: ``is_gt`` (bool), ``gt_thinking_reward`` (``"zero"`` | ``"full"``); other keys
            verl passes (``reward_router_address``, ...) are ignored.

    Returns:
        dict: ``score`` (float) and the keys in ``RESULT_KEYS``.
    """
    scorer = scorer_for_task(task_of(data_source))
    extra = extra_info if isinstance(extra_info, Mapping) else {}
    is_gt = kwargs.get("is_gt", extra.get("is_gt", False))
    gt_thinking_reward = kwargs.get("gt_thinking_reward", extra.get("gt_thinking_reward", "zero"))
    return scorer(
        solution_str,
        ground_truth,
        is_gt=bool(is_gt),
        gt_thinking_reward=str(gt_thinking_reward),
        choices=extra.get("choices"),
    )
