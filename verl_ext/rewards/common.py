"""What every task scorer shares: the GT thinking-reward rule (METHOD.md §3.2) and the result keys."""

from __future__ import annotations

__all__ = ["GT_THINKING_REWARD_MODES", "COMPONENTS", "RESULT_KEYS", "thinking_reward"]

GT_THINKING_REWARD_MODES = ("zero", "full")  # zero: the GT earns no thinking-format reward
COMPONENTS = ("thinking_format", "answer_format", "accuracy", "non_repeat")
# every scorer returns exactly these keys, so verl can stack reward_extra_info over mixed batches
RESULT_KEYS = ("score", *COMPONENTS, "invalid_reason")


def thinking_reward(think_format: bool, *, is_gt: bool, gt_thinking_reward: str) -> float:
    """The thinking-format component: 1.0 when the format matched, but 0.0 for a GT row when
    ``gt_thinking_reward == "zero"`` (METHOD.md §3.2); ``"full"`` scores the GT like a rollout."""
    if gt_thinking_reward not in GT_THINKING_REWARD_MODES:
        raise ValueError(f"gt_thinking_reward must be one of {GT_THINKING_REWARD_MODES}, got {gt_thinking_reward!r}")
    if is_gt and gt_thinking_reward == "zero":
        return 0.0
    return 1.0 if think_format else 0.0
