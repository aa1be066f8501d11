"""What every task scorer shares: the GT thinking-reward rule (docs/METHOD.md §3.2) and the result keys."""

from __future__ import annotations

from verl_ext.constants import GT_THINKING_REWARDS

__all__ = ["GT_THINKING_REWARD_MODES", "COMPONENTS", "RESULT_KEYS", "thinking_reward"]

GT_THINKING_REWARD_MODES = GT_THINKING_REWARDS  # the GT's thinking-format reward: 0, or the full point
COMPONENTS = ("thinking_format", "answer_format", "accuracy", "non_repeat")
# every scorer returns exactly these keys, so verl can stack reward_extra_info over mixed batches
RESULT_KEYS = ("score", *COMPONENTS, "invalid_reason")


def thinking_reward(think_format: bool, *, is_gt: bool, gt_thinking_reward: str) -> float:
    """The thinking-format component: 1.0 when a rollout's format matched, else 0.0.

    A GT row carries no reasoning, so its component is not measured (docs/METHOD.md §3.2):
    ``gt_thinking_reward="zero"`` gives it 0.0 (the method's default), ``"full"`` credits it with
    the full point, so the GT competes with rollouts on the task components alone.
    """
    if gt_thinking_reward not in GT_THINKING_REWARD_MODES:
        raise ValueError(f"gt_thinking_reward must be one of {GT_THINKING_REWARD_MODES}, got {gt_thinking_reward!r}")
    if is_gt:
        return 0.0 if gt_thinking_reward == "zero" else 1.0
    return 1.0 if think_format else 0.0
