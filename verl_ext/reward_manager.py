"""The ViSurf reward manager for verl 0.9.1, and the group step of reward control.

Where each part of reward control runs in verl 0.9.1 (classic trainer, agent-loop rollout):

* **Per row** — ``ViSurfRewardManager.run_single``. verl scores rows one at a time: every
  agent-loop worker sends each finished trajectory to a ``RewardLoopWorker`` ray actor, which
  calls ``run_single`` of the configured manager; the score comes back as ``rm_scores`` (the
  score at the last response token) and the dict keys as ``reward_extra_info``. The manager
  reads the row's ``is_gt`` column and applies the GT thinking-reward rule (METHOD.md §3.2).
* **Per group** — smoothing (METHOD.md §3.3) needs every score of a ``uid`` group, which no
  reward manager sees in 0.9.1. It runs where the whole batch of ``rm_scores`` first becomes
  visible: the ViSurf agent-loop manager's output, ``verl_ext.visurf.gt_injection.apply_group_step``
  (before old log-probs and advantages). Smoothing is idempotent.
* ``ViSurfRewardManager.__call__(data)`` scores a whole batch synchronously (tests, offline
  scoring, a trainer that scores by itself) and smooths it there too.

Select the manager with (``importlib`` needs no import in the ray workers beforehand)::

    reward.reward_manager.source=importlib \\
    reward.reward_manager.name=ViSurfRewardManager \\
    reward.reward_manager.module.path=pkg://verl_ext.reward_manager

or, once ``verl_ext`` is imported in the driver and the reward workers (``import verl_ext``
registers it), ``reward.reward_manager.name=visurf``. Scores come from
``reward.custom_reward_function`` when its path is set (the recipe points it at
``verl_ext/rewards/__init__.py``), else from ``verl_ext.rewards.compute_score``; ``is_gt`` and
``gt_thinking_reward`` reach the scorer through ``extra_info``. The switches come from the
config's ``visurf:`` block (``RewardControl.from_config``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER, register
from verl_ext.rewards import compute_score as default_compute_score
from verl_ext.visurf.reward_control import RewardControl, smooth_gt_rewards

__all__ = ["REWARD_MANAGER_NAME", "ViSurfRewardManager", "last_token_index"]

logger = logging.getLogger(__name__)

REWARD_MANAGER_NAME = "visurf"
IS_GT = "is_gt"  # the batch column marking the GT member of each group (written by GT injection)
# score-carrying tensors the group step keeps consistent (aliases are updated once)
_SCORE_KEYS = ("rm_scores", "token_level_scores", "token_level_rewards")


def _cfg_get(node: Any, *keys: str, default: Any = None) -> Any:
    """``node.keys[0].keys[1]…`` on a dict / DictConfig, ``default`` when any level is missing."""
    for key in keys:
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(key)
    return default if node is None else node


def last_token_index(batch: DataProto) -> torch.Tensor:
    """Index of each row's last valid response token -> long [bs] (0 for an empty response)."""
    if "response_mask" in batch.batch.keys():
        mask = batch.batch["response_mask"]
    else:
        response_length = batch.batch["responses"].shape[-1]
        mask = batch.batch["attention_mask"][:, -response_length:]
    return (mask.sum(-1).long() - 1).clamp_min(0)


def _is_gt_mask(batch: DataProto) -> np.ndarray:
    if IS_GT not in batch.non_tensor_batch:
        return np.zeros(len(batch), dtype=bool)
    return np.asarray(batch.non_tensor_batch[IS_GT], dtype=bool).reshape(-1)


class ViSurfRewardManager(RewardManagerBase):
    """verl reward manager: task scorers by ``data_source`` + GT thinking-reward rule per row.

    ``run_single`` returns ``{"reward_score": float, "reward_extra_info": {score, thinking_format,
    answer_format, accuracy, non_repeat, invalid_reason}}`` (the scorer's dict), which verl turns
    into ``rm_scores`` and logged ``reward_extra_info`` columns.
    """

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        custom = _cfg_get(config, "reward", "custom_reward_function", "path")
        # verl hands its default scorer when no custom function is configured: use ours then
        self.compute_score = compute_score if (custom and compute_score is not None) else default_compute_score
        self.control = RewardControl.from_config(_cfg_get(config, "visurf"))

    # ---------------------------------------------------------------------------------------
    def _score(self, data_source: str, response: str, ground_truth: Any, extra_info: Any, is_gt: bool) -> dict:
        extra = dict(extra_info) if isinstance(extra_info, dict) else {}
        extra[IS_GT] = is_gt
        extra["gt_thinking_reward"] = self.control.gt_thinking_reward
        try:
            result = self.compute_score(
                data_source=data_source, solution_str=response, ground_truth=ground_truth, extra_info=extra
            )
        except ValueError as e:  # a bad label or data_source is a data bug: say which row
            raise ValueError(f"reward for row {extra.get('id', extra.get('index', '?'))!r} "
                             f"(data_source={data_source!r}, ground_truth={str(ground_truth)[:200]!r}): {e}") from e
        if not isinstance(result, dict):
            result = {"score": float(result)}
        score = float(result["score"])
        if not math.isfinite(score):
            raise ValueError(f"reward for data_source={data_source!r} is not finite: {score}")
        return {**result, "score": score}

    def _decode(self, item) -> str:
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
        return self.tokenizer.decode(response_ids[:valid_length], skip_special_tokens=True)

    async def run_single(self, data: DataProto) -> dict:
        """Score one row (verl's reward loop calls this once per trajectory)."""
        item = data[-1]  # multi-sequence outputs: the reward is computed on the last sequence
        nt = item.non_tensor_batch
        response = await self.loop.run_in_executor(None, lambda: self._decode(item))
        result = await self.loop.run_in_executor(
            None,
            lambda: self._score(
                nt["data_source"],
                response,
                nt["reward_model"]["ground_truth"],
                nt.get("extra_info"),
                bool(nt.get(IS_GT, False)),
            ),
        )
        return {"reward_score": result["score"], "reward_extra_info": result}

    # ---------------------------------------------------------------------------------------
    def __call__(self, data: DataProto, return_dict: bool = False):
        """Score a whole batch here (no reward loop) and apply the group step when ``is_gt`` and
        ``uid`` are present: ``{"reward_tensor": [bs, response_len], "reward_extra_info": {...}}``
        (or just the tensor), the score at each row's last valid response token."""
        is_gt = _is_gt_mask(data)
        rows = []
        for i in range(len(data)):
            item = data[i]
            nt = item.non_tensor_batch
            rows.append(
                self._score(
                    nt["data_source"],
                    self._decode(item),
                    nt["reward_model"]["ground_truth"],
                    nt.get("extra_info"),
                    bool(is_gt[i]),
                )
            )
        scores = torch.tensor([r["score"] for r in rows], dtype=torch.float32)
        reward_tensor = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        reward_tensor[torch.arange(len(data)), last_token_index(data)] = scores
        extra = {k: [r.get(k) for r in rows] for k in rows[0]} if rows else {}
        if self.control.smoothing and is_gt.any() and "uid" in data.non_tensor_batch:
            match = None  # like with like: no thinking component when the GT cannot earn it
            if self.control.gt_thinking_reward == "zero":
                match = scores.double() - torch.tensor([float(r.get("thinking_format", 0.0)) for r in rows])
            smoothed = smooth_gt_rewards(scores, data.non_tensor_batch["uid"], torch.from_numpy(is_gt), match)
            reward_tensor[torch.arange(len(data)), last_token_index(data)] = smoothed
            extra["score_smoothed"] = smoothed.tolist()
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": extra}
        return reward_tensor


def _register() -> None:
    """Register under ``REWARD_MANAGER_NAME``; idempotent, also when this file is loaded again
    under another module name (verl's ``load_extern_object`` with a file path does that)."""
    existing = REWARD_MANAGER.get(REWARD_MANAGER_NAME)
    if existing is None:
        register(REWARD_MANAGER_NAME)(ViSurfRewardManager)
    elif existing.__qualname__ == ViSurfRewardManager.__qualname__:
        REWARD_MANAGER[REWARD_MANAGER_NAME] = ViSurfRewardManager  # a reload of this module
    else:
        raise ValueError(f"reward manager {REWARD_MANAGER_NAME!r} is already registered: {existing}")


_register()
