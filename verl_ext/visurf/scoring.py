"""Scoring one row with any verl-signature reward function, with the GT rule's ``extra_info``
(docs/METHOD.md §3.2): ``score_row`` (sync callers: the start-up check) and ``score_row_async``
(the reward manager's event loop).

The one home of this call: the reward manager (``verl_ext.reward_manager.ViSurfRewardManager``,
verl glue) and the start-up check (``verl_ext.visurf.source_check``) both import it from here, so
the start-up check does not reach back into the reward manager. No verl import.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from typing import Any

from verl_ext.coords import EXTRA_INFO_KEY as COORDS_KEY
from verl_ext.visurf import columns as C

__all__ = ["score_row", "score_row_async"]


def _row_extra(extra_info: Any, is_gt: bool, gt_thinking_reward: str, coords: str | None = None) -> dict:
    """The row's ``extra_info`` plus ``is_gt`` and ``gt_thinking_reward`` (docs/METHOD.md §3.2) and, when
    given, the run's coordinate convention under ``"coords"`` (``verl_ext.coords``)."""
    extra = dict(extra_info) if isinstance(extra_info, dict) else {}
    extra[C.IS_GT] = bool(is_gt)
    extra["gt_thinking_reward"] = gt_thinking_reward
    if coords is not None:
        extra[COORDS_KEY] = coords
    return extra


@contextlib.contextmanager
def _naming_row(data_source: str, ground_truth: Any, extra: dict):
    """Re-raise a scorer's ``ValueError`` (a bad label or data_source is a data bug) naming the row."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"reward for row {extra.get('id', extra.get('index', '?'))!r} "
                         f"(data_source={data_source!r}, ground_truth={str(ground_truth)[:200]!r}): {e}") from e


def _score_dict(result: Any, data_source: str) -> dict:
    """A float result becomes ``{"score": float}``; a dict without ``score`` (verl's key for the
    reward, ``naive.py`` line 90) or a non-finite score raises naming the source."""
    if not isinstance(result, dict):
        result = {"score": float(result)}
    if "score" not in result:
        raise ValueError(f"reward for data_source={data_source!r} returned a dict without the 'score' key "
                         f"(keys: {sorted(result)}): verl reads the reward from result['score']")
    score = float(result["score"])
    if not math.isfinite(score):
        raise ValueError(f"reward for data_source={data_source!r} is not finite: {score}")
    return {**result, "score": score}


def score_row(compute_score, data_source: str, response: str, ground_truth: Any, extra_info: Any, *,
              is_gt: bool, gt_thinking_reward: str, reward_kwargs: dict | None = None,
              coords: str | None = None) -> dict:
    """Score one row with a verl-signature reward function: ``compute_score(data_source=...,
    solution_str=..., ground_truth=..., extra_info=...)``, ``extra_info`` being the row's own plus
    ``is_gt`` and ``gt_thinking_reward`` (docs/METHOD.md §3.2), so any function — the project's scorers,
    verl's, a user's ``reward.custom_reward_function`` — can apply the GT rule. A float result
    becomes ``{"score": float}``; a non-finite score or a ``ValueError`` raises naming the row.

    An ``async def`` function (verl allows one) is run to completion here with ``asyncio.run``
    (for callers without an event loop: the start-up check, an executor thread); the reward
    manager awaits one on its own loop instead (``score_row_async``). ``reward_kwargs``: the
    reward-model keywords of a run with a reward model (``ViSurfRewardManager.reward_kwargs``);
    ``coords``: the run's coordinate convention, put in ``extra_info["coords"]`` (the recipe's scorers
    read the answer's coordinates in it; a user's function may)."""
    extra = _row_extra(extra_info, is_gt, gt_thinking_reward, coords)
    with _naming_row(data_source, ground_truth, extra):
        result = compute_score(data_source=data_source, solution_str=response, ground_truth=ground_truth,
                               extra_info=extra, **(reward_kwargs or {}))
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    return _score_dict(result, data_source)


async def score_row_async(compute_score, data_source: str, response: str, ground_truth: Any, extra_info: Any, *,
                          is_gt: bool, gt_thinking_reward: str, reward_kwargs: dict | None = None,
                          coords: str | None = None) -> dict:
    """``score_row`` for an ``async def`` reward function, awaited on the running event loop as
    verl 0.9.1's own reward managers await one (``NaiveRewardManager.run_single``,
    ``verl/experimental/reward_loop/reward_manager/naive.py`` lines 30 and 66-73)."""
    extra = _row_extra(extra_info, is_gt, gt_thinking_reward, coords)
    with _naming_row(data_source, ground_truth, extra):
        result = await compute_score(data_source=data_source, solution_str=response, ground_truth=ground_truth,
                                     extra_info=extra, **(reward_kwargs or {}))
    return _score_dict(result, data_source)
