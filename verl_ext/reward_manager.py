"""The ViSurf reward manager for verl 0.9.1, and the group step of reward control.

Where each part of reward control runs in verl 0.9.1 (classic trainer, agent-loop rollout):

* **Per row** — ``ViSurfRewardManager.run_single``. verl scores rows one at a time: every
  agent-loop worker sends each finished trajectory to a ``RewardLoopWorker`` ray actor, which
  calls ``run_single`` of the configured manager; the score comes back as ``rm_scores`` (the
  score at the last response token) and the dict keys as ``reward_extra_info``. The manager
  reads the row's ``is_gt`` column and applies the GT thinking-reward rule (METHOD.md §3.2).
* **Per group** — smoothing (METHOD.md §3.3) needs every score of a ``uid`` group, which no
  reward manager sees in 0.9.1. It runs where the whole batch is visible:
  ``apply_group_reward_control(batch, control)`` right after the trainer gathers rewards and
  before ``compute_advantage`` (or on the agent-loop manager's output ``rm_scores``).
  Smoothing is idempotent, so running it twice gives the same rewards.
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
from collections import Counter
from typing import Any

import numpy as np
import torch

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER, register
from verl_ext.rewards import compute_score as default_compute_score
from verl_ext.rewards.common import COMPONENTS
from verl_ext.visurf.reward_control import RewardControl, smooth_gt_rewards

__all__ = ["REWARD_MANAGER_NAME", "ViSurfRewardManager", "apply_group_reward_control", "last_token_index"]

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
        result = self.compute_score(
            data_source=data_source, solution_str=response, ground_truth=ground_truth, extra_info=extra
        )
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
            smoothed = smooth_gt_rewards(scores, data.non_tensor_batch["uid"], torch.from_numpy(is_gt))
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


# --------------------------------------------------------------------------------------------
# The group step (smoothing), where the trainer sees the whole batch
# --------------------------------------------------------------------------------------------
def apply_group_reward_control(batch: DataProto, control: RewardControl) -> dict[str, float]:
    """Reward smoothing per ``uid`` group on a scored batch (METHOD.md §3.3), in the trainer.

    Call it after the rewards are gathered (``rm_scores`` / ``token_level_scores`` present) and
    before ``compute_advantage``. Each row's outcome reward is the sum of its score tensor; the
    change ``smooth_gt_rewards(...) − reward`` is added at the row's last valid response token of
    every score tensor present (``rm_scores``, ``token_level_scores``, ``token_level_rewards``).
    Tensors that alias each other (``use_kl_in_reward=False`` makes ``token_level_rewards`` the
    same tensor as ``token_level_scores``) stay aliased and get the change once; with the KL
    penalty already applied, the rewards keep their per-token KL terms. Tensors are replaced, not
    modified in place. A batch without ``is_gt`` rows is left unchanged.

    Args:
        batch: `(DataProto)` with ``uid`` and ``is_gt`` (non-tensor) and at least one of the score
            tensors, shape (bs, response_length); ``response_mask`` or ``attention_mask``.
        control: `(RewardControl)` the switches (``smoothing``).

    Returns:
        metrics: ``visurf/gt_reward_before_smoothing``, ``visurf/gt_reward_after_smoothing``,
        ``visurf/gt_smoothed_frac`` (share of GT rows whose reward smoothing changed), ``visurf/gt_beats_rollouts_frac``
        (GT strictly above every rollout of its group: the GT carries signal),
        ``visurf/rollout_reward_mean``, ``visurf/rollout_<component>_mean`` and
        ``visurf/rollout_invalid/<reason>`` (share of rollouts) when the reward extra info is in
        the batch.
    """
    keys = [k for k in _SCORE_KEYS if k in batch.batch.keys()]
    if not keys:
        raise ValueError(f"batch has none of the score tensors {_SCORE_KEYS}")
    is_gt = _is_gt_mask(batch)
    rollout = ~is_gt
    source = "token_level_scores" if "token_level_scores" in keys else keys[0]
    scores = batch.batch[source].sum(-1)
    metrics: dict[str, float] = {}
    if rollout.any():
        metrics["visurf/rollout_reward_mean"] = float(scores[torch.from_numpy(rollout)].mean())
        for name in COMPONENTS:
            if name in batch.non_tensor_batch:
                metrics[f"visurf/rollout_{name}_mean"] = float(
                    np.mean(np.asarray(batch.non_tensor_batch[name], dtype=np.float64)[rollout])
                )
        if "invalid_reason" in batch.non_tensor_batch:
            reasons = Counter(str(r) for r in np.asarray(batch.non_tensor_batch["invalid_reason"])[rollout] if r)
            n = int(rollout.sum())
            for reason, count in sorted(reasons.items()):
                metrics[f"visurf/rollout_invalid/{reason}"] = count / n
    if not is_gt.any():
        return metrics

    gt_t = torch.from_numpy(is_gt)
    uid = np.asarray(batch.non_tensor_batch["uid"])
    metrics["visurf/gt_reward_before_smoothing"] = float(scores[gt_t].mean())
    # best rollout per group, for the "GT carries signal" share
    best: dict[Any, float] = {}
    for u, s in zip(uid[rollout], scores[torch.from_numpy(rollout)].tolist(), strict=True):
        best[u] = max(best.get(u, -math.inf), s)
    gt_rows = np.flatnonzero(is_gt)
    beats = [float(scores[i]) > best.get(uid[i], -math.inf) for i in gt_rows]
    metrics["visurf/gt_beats_rollouts_frac"] = float(np.mean(beats))

    new = smooth_gt_rewards(scores, uid, gt_t) if control.smoothing else scores
    delta = (new - scores).to(batch.batch[source].dtype)
    metrics["visurf/gt_reward_after_smoothing"] = float(new[gt_t].mean())
    metrics["visurf/gt_smoothed_frac"] = float((delta[gt_t] != 0).float().mean()) if control.smoothing else 0.0
    if control.smoothing and bool((delta != 0).any()):
        rows = torch.arange(len(batch))
        last = last_token_index(batch)
        replaced: dict[int, torch.Tensor] = {}  # id(old tensor) -> new tensor, keeps aliases aliased
        for key in keys:
            old = batch.batch[key]
            if id(old) not in replaced:
                updated = old.clone()
                updated[rows, last] += delta.to(updated.dtype)
                replaced[id(old)] = updated
            batch.batch[key] = replaced[id(old)]
    return metrics
