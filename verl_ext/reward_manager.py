"""The ViSurf reward manager for verl 0.9.1 (per-row scoring; the group step lives elsewhere).

Where each part of reward control runs in verl 0.9.1 (classic trainer, agent-loop rollout):

* **Per row** — ``ViSurfRewardManager.run_single``. verl scores rows one at a time: every
  agent-loop worker sends each finished trajectory to a ``RewardLoopWorker`` ray actor, which
  calls ``run_single`` of the configured manager; the score comes back as ``rm_scores`` (the
  score at the last response token) and the dict keys as ``reward_extra_info``. The manager
  reads the row's ``is_gt`` column and applies the GT thinking-reward rule (docs/METHOD.md §3.2).
* **Per group** — smoothing (docs/METHOD.md §3.3) needs every score of a ``uid`` group, which no
  reward manager sees in 0.9.1. It runs where the whole batch of ``rm_scores`` first becomes
  visible: the ViSurf agent-loop manager's output, ``verl_ext.visurf.group_step.apply_group_step``
  (before old log-probs and advantages) — the one place smoothing runs.

Selected by module path only (``importlib`` needs no import in the ray workers beforehand; the
manager is not written into verl's ``REWARD_MANAGER`` registry)::

    reward.reward_manager.source=importlib \\
    reward.reward_manager.name=ViSurfRewardManager \\
    reward.reward_manager.module.path=pkg://verl_ext.reward_manager

Scores come from
``reward.custom_reward_function`` when its path is set (the recipe points it at
``verl_ext/rewards/__init__.py``), else from ``verl_ext.rewards.compute_score``; ``is_gt`` and
``gt_thinking_reward`` reach the scorer through ``extra_info``, as does the run's coordinate
convention ``visurf.coords`` (``extra_info["coords"]``, ``verl_ext.coords``). The switches come from the
config's ``visurf:`` block (``verl_ext.visurf.config.VisurfConfig``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl_ext.rewards import compute_score as default_compute_score
from verl_ext.visurf import columns as C
from verl_ext.visurf.config import cfg_get, visurf_config
from verl_ext.visurf.scoring import score_row, score_row_async  # the one home of the per-row call

__all__ = ["ViSurfRewardManager", "score_row", "score_row_async"]

logger = logging.getLogger(__name__)


class ViSurfRewardManager(RewardManagerBase):
    """verl reward manager: task scorers by ``data_source`` + GT thinking-reward rule per row.

    ``run_single`` returns ``{"reward_score": float, "reward_extra_info": {score, thinking_format,
    answer_format, accuracy, non_repeat, invalid_reason}}`` (the scorer's dict), which verl turns
    into ``rm_scores`` and logged ``reward_extra_info`` columns.
    """

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        custom = cfg_get(config, "reward.custom_reward_function.path")
        # verl hands its default scorer when no custom function is configured: use ours then
        self.compute_score = compute_score if (custom and compute_score is not None) else default_compute_score
        # as verl's own managers (naive.py line 30): an ``async def`` reward function is awaited on the loop
        self.is_async_reward_score = inspect.iscoroutinefunction(self.compute_score)
        self.control = visurf_config(cfg_get(config, "visurf"))
        # a reward model (reward.reward_model.enable): verl's reward loop hands its router address and
        # tokenizer; the reward function gets them as keywords exactly as from verl's own managers
        # (NaiveRewardManager, naive.py lines 58-64: only when an address is set)
        self.reward_kwargs = ({"reward_router_address": reward_router_address,
                               "reward_model_tokenizer": reward_model_tokenizer}
                              if reward_router_address is not None else {})

    # ---------------------------------------------------------------------------------------
    def _score(self, data_source: str, response: str, ground_truth: Any, extra_info: Any, is_gt: bool) -> dict:
        return score_row(self.compute_score, data_source, response, ground_truth, extra_info,
                         is_gt=is_gt, gt_thinking_reward=self.control.gt_thinking_reward,
                         reward_kwargs=self.reward_kwargs, coords=self.control.resolved_coords)

    def _decode(self, item) -> str:
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        return self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)

    async def run_single(self, data: DataProto) -> dict:
        """Score one row (verl's reward loop calls this once per trajectory)."""
        item = data[-1]  # multi-sequence outputs: the reward is computed on the last sequence
        nt = item.non_tensor_batch
        response = await self.loop.run_in_executor(None, lambda: self._decode(item))
        if self.is_async_reward_score:
            result = await score_row_async(
                self.compute_score, nt["data_source"], response, nt["reward_model"]["ground_truth"],
                nt.get("extra_info"), is_gt=bool(nt.get(C.IS_GT, False)),
                gt_thinking_reward=self.control.gt_thinking_reward, reward_kwargs=self.reward_kwargs,
                coords=self.control.resolved_coords)
            return {"reward_score": result["score"], "reward_extra_info": result}
        result = await self.loop.run_in_executor(
            None,
            lambda: self._score(
                nt["data_source"],
                response,
                nt["reward_model"]["ground_truth"],
                nt.get("extra_info"),
                bool(nt.get(C.IS_GT, False)),
            ),
        )
        return {"reward_score": result["score"], "reward_extra_info": result}
