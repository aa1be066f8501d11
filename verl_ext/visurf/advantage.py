"""The "visurf" advantage estimator (docs/METHOD.md §1.4): GRPO normalisation over the augmented group.

Select it with `algorithm.adv_estimator=visurf`. Each `uid` group holds the G rollouts plus the
GT row (when one was injected); every member is normalised against all G+1 rewards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import register_adv_est

from verl_ext.visurf.group_step import group_ids

__all__ = ["compute_visurf_outcome_advantage"]

MEAN_ULPS = 4.0  # float64 rounding allowance (in ulps per group member) of the mean-of-others check


@register_adv_est("visurf")
def compute_visurf_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config: AlgoConfig | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantage normalised per `uid` group over all G rollouts and the GT row.

    Â_j = (r_j − mean_{G+1}) / (std_{G+1} + ε)   (r_j − mean_{G+1} when norm_adv_by_std_in_grpo=False)

    std is the unbiased estimator (`torch.std`) and ε = 1e-6, as in verl's GRPO. Two deliberate
    differences from `compute_grpo_outcome_advantage`: a group with a single member gets Â = 0
    (verl's GRPO uses mean 0, std 1 there, i.e. Â = r), since one sample carries no relative
    signal (docs/METHOD.md §1.4); a group whose rewards are all equal gets exactly Â = 0.

    Exact zeros: a row whose reward equals the mean of the *other* members of its group has
    Â = 0 in exact arithmetic (r_j = mean_{-j} ⟺ r_j = mean_{G+1}); with float32 rewards the
    stored r_j is that mean rounded once, and the float64 statistics would leave |Â| up to ~1e-3
    after the std division (float64 rewards: up to ~1e-14, the group sums' own rounding, within
    ``MEAN_ULPS`` ulps per member). Such a row — which is exactly what reward smoothing writes for the GT
    (r_gt := mean(rollouts) in float64, rounded to the reward dtype; `group_step.smooth_gt_rewards`)
    — is recognised by recomputing mean_{-j} the same way and gets Â = 0 exactly. (The float64
    group sums are exact for float32 rewards of similar magnitude, so the recomputation matches.)
    Statistics are computed in float64 and cast back. Vectorised (index_add / scatter_reduce over
    dense group ids), no Python loop over rows.

    Args:
        token_level_rewards: `(torch.Tensor)`
            shape is (bs, response_length); the outcome reward r_j is its sum over tokens.
        response_mask: `(torch.Tensor)`
            shape is (bs, response_length)
        index: `(np.ndarray)`
            shape is (bs,), group label per row (verl's `uid`, str or int)
        epsilon: `(float)`
            small value to avoid division by zero
        norm_adv_by_std_in_grpo: `(bool)`
            whether to divide by the group std (False: Dr.GRPO-style centring only). When
            `config` is given (verl's trainer passes the algorithm config and not this
            argument), `config.norm_adv_by_std_in_grpo` wins.
        config: `(Optional[AlgoConfig])`
            algorithm configuration object
        **kwargs: ignored (verl passes optional extras to registered estimators).

    Returns:
        advantages: `(torch.Tensor)`
            shape: (bs, response_length), the per-row scalar broadcast over response tokens
        returns: `(torch.Tensor)`
            shape: (bs, response_length), same tensor as advantages (outcome-only estimator)
    """
    if config is not None:
        norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo)

    with torch.no_grad():
        stored = token_level_rewards.sum(dim=-1)
        scores = stored.to(torch.float64)
        gid, n_groups = group_ids(index, device=scores.device)
        if gid.numel() != scores.numel():
            raise ValueError(f"index has {gid.numel()} labels for {scores.numel()} rows")

        count = torch.bincount(gid, minlength=n_groups).to(torch.float64)
        total = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(0, gid, scores)
        mean = total / count.clamp_min(1.0)
        centered = scores - mean[gid]
        if norm_adv_by_std_in_grpo:
            sq_sum = torch.zeros_like(mean).index_add_(0, gid, centered * centered)
            std = (sq_sum / (count - 1.0).clamp_min(1.0)).sqrt()
            scalars = centered / (std[gid] + epsilon)
        else:
            scalars = centered

        g_max = torch.full_like(mean, -torch.inf).scatter_reduce_(0, gid, scores, reduce="amax")
        g_min = torch.full_like(mean, torch.inf).scatter_reduce_(0, gid, scores, reduce="amin")
        informative = (count > 1) & (g_max > g_min)  # one-member and all-equal groups: Â = 0
        # r_j == mean of the other members (rounded to the reward dtype, as smoothing writes it): Â_j = 0.
        # For float64 rewards total - r_j itself is rounded, so "equal" is up to the rounding of the sums:
        # |r_j - mean_{-j}| <= MEAN_ULPS * count * eps64 * max|r| (about 1e-14 on a 0-7 reward)
        others_mean = (total[gid] - scores) / (count[gid] - 1.0).clamp_min(1.0)
        scale = torch.zeros_like(mean).scatter_reduce_(0, gid, scores.abs(), reduce="amax")
        rounding = MEAN_ULPS * count[gid] * torch.finfo(torch.float64).eps * scale[gid]
        same = (others_mean.to(stored.dtype) == stored) | ((others_mean - scores).abs() <= rounding)
        at_mean_of_others = (count[gid] > 1) & same
        scalars = torch.where(informative[gid] & ~at_mean_of_others, scalars, torch.zeros_like(scalars))

        advantages = scalars.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return advantages, advantages
