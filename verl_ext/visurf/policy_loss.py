"""The "visurf" policy loss (docs/METHOD.md §1.5) and its GT-row variants (docs/METHOD.md §6).

- `compute_policy_loss_visurf`: registered as policy loss "visurf"
  (`actor_rollout_ref.actor.policy_loss.loss_mode=visurf`): the clipped surrogate over all
  G+1 rows. A registered loss never sees batch columns, so it cannot tell GT rows apart.
- `visurf_actor_loss`: the full actor loss (a drop-in for verl's `ppo_loss`) that reads the
  `is_gt` / pad / active columns (pad rows and switched-off GT rows contribute nothing to any
  term; the KL term skips GT rows: `loss_row_masks`); installed by the trainer in every ViSurf run
  with `actor_rollout_wg.set_loss_fn(partial(visurf_actor_loss, config=actor_cfg, gt_loss=...))`.
- `visurf_policy_loss_terms`: the pure function both use.

GT-row variants (`gt_loss`, `verl_ext.visurf.config.GT_LOSSES`): "ppo_clip" (default, the paper:
GT rows are ordinary members of the clipped surrogate), "luffy_shaping" (LUFFY: −Â·π/(π+γ) on GT
rows, no clip), "sft" (−Â·log π on GT rows). Rollout rows always use the clipped surrogate.

MIRRORED verl 0.9.1 CODE (re-check on a verl upgrade):
- `visurf_actor_loss` mirrors `verl.workers.utils.losses.ppo_loss` line for line (global batch
  info, metric aggregation, entropy and KL terms, metric keys) around the GT-aware policy term;
- `_clipped_surrogate` mirrors the dual-clip surrogate of `verl.trainer.ppo.core_algos.
  compute_policy_loss_vanilla`.
`tests/test_visurf_policy_loss.py` checks both against verl's own functions on GT-free batches
(`test_actor_loss_is_verl_ppo_loss_without_gt_variant`, `test_registered_loss_equals_verl_vanilla`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import verl.utils.torch_functional as verl_F
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss, kl_penalty, register_policy_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import ActorConfig
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from verl_ext.constants import GT_LOSSES, SURROGATE_LOSS_MODES
from verl_ext.visurf import columns as C

__all__ = [
    "KL_ON_GT_ROWS",
    "compute_policy_loss_visurf",
    "loss_row_masks",
    "visurf_actor_loss",
    "visurf_policy_loss_terms",
]

LOG_RATIO_CLAMP = 20.0  # verl clamps log(π/π_old) to ±20 before exp (compute_policy_loss_vanilla)


def _clipped_surrogate(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """verl's dual-clip PPO surrogate per token (exactly as compute_policy_loss_vanilla).

    Returns (pg_losses, negative_approx_kl, clipped_high, clipped_lower), all (bs, response_length).
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c (dual-clip lower bound) must be > 1.0, got {clip_ratio_c}")
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    clipped_high = torch.gt(pg_losses2, pg_losses1).float()
    clipped_lower = torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).float()
    return pg_losses, negative_approx_kl, clipped_high, clipped_lower


def visurf_policy_loss_terms(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_gt: torch.Tensor | None = None,
    gt_loss: str = "ppo_clip",
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    luffy_gamma: float = 0.1,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,
    global_batch_info: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ViSurf policy loss over the augmented group, with the GT-row variant `gt_loss`.

    L = agg_{j,t} ℓ_jt,  ℓ_jt = −min(ρ_jt Â_j, clip(ρ_jt, 1−ε_low, 1+ε_high) Â_j)  (dual-clipped by
    clip_ratio_c for Â<0, ρ = exp(log π − log π_old)); on GT rows ℓ_jt = −Â_j π/(π+γ) ("luffy_shaping",
    π = exp(log π), no clip) or −Â_j log π ("sft"). Aggregation: verl's `agg_loss(loss_agg_mode)`
    ("seq-mean-token-sum" is the paper's sequence-sum objective).

    Args:
        old_log_prob: `(torch.Tensor)` shape (bs, response_length), log π_old (teacher-forced for GT rows).
        log_prob: `(torch.Tensor)` shape (bs, response_length), log π_θ (carries the gradient).
        advantages: `(torch.Tensor)` shape (bs, response_length).
        response_mask: `(torch.Tensor)` shape (bs, response_length), bool or 0/1.
        is_gt: `(Optional[torch.Tensor])` shape (bs,), True on GT rows; None: no GT rows.
        gt_loss: `(str)` one of GT_LOSSES.
        clip_ratio_low, clip_ratio_high: `(float)` ε_low, ε_high of the clipped surrogate.
        clip_ratio_c: `(float)` dual-clip bound for negative advantages (> 1).
        luffy_gamma: `(float)` γ of the LUFFY shaping f(π) = π/(π+γ).
        loss_agg_mode: `(str)` verl's loss aggregation mode.
        rollout_is_weights: `(Optional[torch.Tensor])` shape (bs, response_length), verl's rollout
            correction weights; multiply the clipped-surrogate rows (all rows under "ppo_clip",
            exactly as verl; rollout rows only under the other variants).
        global_batch_info: `(Optional[dict])` verl's dp_size / batch_num_tokens / global_batch_size /
            loss_scale_factor, forwarded to `agg_loss`.

    Returns:
        pg_loss: `(torch.Tensor)` scalar.
        pg_metrics: `(dict[str, torch.Tensor])` detached scalars "actor/pg_clipfrac", "actor/ppo_kl",
            "actor/pg_clipfrac_lower" (verl's keys; clip fractions over the clipped-surrogate tokens).
    """
    if gt_loss not in GT_LOSSES:  # the config was validated at start-up (VisurfConfig); direct callers here
        raise ValueError(f"gt_loss must be one of {GT_LOSSES}, got {gt_loss!r}")
    if not luffy_gamma > 0:
        raise ValueError(f"luffy_gamma must be > 0, got {luffy_gamma!r}")
    pg_losses, negative_approx_kl, clipped_high, clipped_lower = _clipped_surrogate(
        old_log_prob, log_prob, advantages, clip_ratio_low, clip_ratio_high, clip_ratio_c
    )
    if rollout_is_weights is not None and gt_loss == "ppo_clip":
        pg_losses = pg_losses * rollout_is_weights

    clip_mask = response_mask
    if gt_loss != "ppo_clip" and is_gt is not None:
        gt_rows = is_gt.to(device=log_prob.device, dtype=torch.bool).reshape(-1, 1)
        if rollout_is_weights is not None:
            pg_losses = torch.where(gt_rows, pg_losses, pg_losses * rollout_is_weights)
        if gt_loss == "luffy_shaping":
            prob = torch.exp(log_prob)
            gt_losses = -advantages * prob / (prob + luffy_gamma)
        else:  # "sft"
            gt_losses = -advantages * log_prob
        pg_losses = torch.where(gt_rows, gt_losses, pg_losses)
        clip_mask = response_mask.bool() & ~gt_rows

    pg_loss = agg_loss(
        loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **(global_batch_info or {})
    )
    pg_metrics = {
        "actor/pg_clipfrac": verl_F.masked_mean(clipped_high, clip_mask).detach(),
        "actor/ppo_kl": verl_F.masked_mean(-negative_approx_kl, response_mask).detach(),
        "actor/pg_clipfrac_lower": verl_F.masked_mean(clipped_lower, clip_mask).detach(),
    }
    return pg_loss, pg_metrics


def _clip_ratios(config: Any) -> dict[str, float]:
    """clip_ratio_low/high/c from an actor config, with verl's fallbacks (compute_policy_loss_vanilla)."""
    clip_ratio = config.clip_ratio
    return {
        "clip_ratio_low": config.clip_ratio_low if config.clip_ratio_low is not None else clip_ratio,
        "clip_ratio_high": config.clip_ratio_high if config.clip_ratio_high is not None else clip_ratio,
        "clip_ratio_c": config.get("clip_ratio_c", 3.0),
    }


@register_policy_loss("visurf")  # type: ignore[arg-type]
def compute_policy_loss_visurf(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: ActorConfig | None = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """ViSurf clipped surrogate over all G+1 rows (docs/METHOD.md §1.5), verl's registered-loss signature.

    L = −1/(G+1) Σ_j agg_t min(ρ_jt Â_j, clip(ρ_jt, 1−ε_low, 1+ε_high) Â_j)

    Identical to verl's "vanilla" loss (same clip ratios from `config`, dual clip, rollout
    correction weights, `agg_loss` with `config.global_batch_info`, same metrics), so verl's actor
    logs it unchanged. GT-row variants need the `is_gt` column: see `visurf_actor_loss`.

    Args:
        old_log_prob: `(torch.Tensor)` shape (bs, response_length).
        log_prob: `(torch.Tensor)` shape (bs, response_length).
        advantages: `(torch.Tensor)` shape (bs, response_length).
        response_mask: `(torch.Tensor)` shape (bs, response_length).
        loss_agg_mode: `(str)` verl's loss aggregation mode.
        config: `(verl.workers.config.ActorConfig)` the actor config (clip ratios, global batch info).
        rollout_is_weights: `(torch.Tensor | None)` shape (bs, response_length).

    Returns:
        pg_loss: `(torch.Tensor)` scalar.
        pg_metrics: `(dict[str, float])` "actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower".
    """
    if config is None:
        raise ValueError("the visurf policy loss needs the actor config (clip ratios)")
    pg_loss, pg_metrics = visurf_policy_loss_terms(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        rollout_is_weights=rollout_is_weights,
        global_batch_info=config.get("global_batch_info", None),
        **_clip_ratios(config),
    )
    return pg_loss, {key: value.item() for key, value in pg_metrics.items()}


KL_ON_GT_ROWS = False  # the KL loss term skips GT rows (loss_row_masks): see visurf_actor_loss


def _row_column(data: TensorDict, key: str) -> torch.Tensor | None:
    """The micro-batch's bool column ``key`` (``is_gt``, pad / active flags) as a tensor (bs,), or None
    when the batch has none. The column arrives as a tensor, a tensordict non-tensor stack / list
    of bools, or a numpy array."""
    if key not in data.keys():
        return None
    value = data[key]
    if isinstance(value, torch.Tensor):
        rows = value.reshape(-1).to(torch.bool)
    else:
        rows = torch.from_numpy(np.asarray(value if isinstance(value, np.ndarray) else list(value), dtype=bool))
        rows = rows.reshape(-1)
    if rows.numel() != data.batch_size[0]:
        raise ValueError(f"{key} has {rows.numel()} entries for a micro-batch of {data.batch_size[0]} rows")
    return rows


def _is_gt_rows(data: TensorDict) -> torch.Tensor | None:
    """The micro-batch's `is_gt` column as a bool tensor (bs,), or None when the batch has none."""
    return _row_column(data, C.IS_GT)


def loss_row_masks(
    response_mask: torch.Tensor, is_gt: torch.Tensor, is_pad: torch.Tensor | None = None,
    gt_active: torch.Tensor | None = None, kl_on_gt: bool = KL_ON_GT_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token masks of the loss terms of a ViSurf micro-batch.

    frozen_j = is_pad_j ∨ (is_gt_j ∧ ¬active_j)      (pad rows, GT rows switched off by all_fail)
    train_jt = response_mask_jt ∧ ¬frozen_j           (policy and entropy terms)
    kl_jt    = train_jt ∧ ¬is_gt_j                    (KL term; ∧ nothing when ``kl_on_gt``)

    A frozen row contributes exactly nothing to any term (its tokens are out of every mask); it
    still counts in the normalisation, which comes from the whole ``response_mask`` (verl's
    ``batch_num_tokens`` / ``global_batch_size``). ``gt_active`` None: every GT row active.

    Returns ``(train_mask, kl_mask)``, bool (bs, response_length).
    """
    gt = is_gt.to(device=response_mask.device, dtype=torch.bool).reshape(-1)
    frozen = torch.zeros_like(gt)
    if is_pad is not None:
        frozen |= is_pad.to(device=gt.device, dtype=torch.bool).reshape(-1)
    if gt_active is not None:
        frozen |= gt & ~gt_active.to(device=gt.device, dtype=torch.bool).reshape(-1)
    train = response_mask.bool() & ~frozen[:, None]
    kl = train if kl_on_gt else train & ~gt[:, None]
    return train, kl


def _fill_normalisers(global_batch_info: dict[str, Any], response_mask: torch.Tensor) -> None:
    """Single-process calls without verl's global batch info (``dp_size == 1``): the denominators
    ``agg_loss`` would take from the loss mask, taken from the whole ``response_mask`` instead, so
    masking frozen rows out of a term never changes its normalisation."""
    if global_batch_info.get("dp_size", 1) > 1:
        return
    if global_batch_info.get("batch_num_tokens") is None:
        global_batch_info["batch_num_tokens"] = response_mask.sum()
    if global_batch_info.get("global_batch_size") is None:
        global_batch_info["global_batch_size"] = (response_mask.sum(-1) > 0).sum()


def visurf_actor_loss(
    config: ActorConfig,
    model_output: dict[str, torch.Tensor],
    data: TensorDict,
    dp_group: Any = None,
    gt_loss: str = "ppo_clip",
    luffy_gamma: float = 0.1,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Full actor loss of a ViSurf run: verl's `ppo_loss` with GT-aware row masks and policy term.

    MIRROR of verl 0.9.1 `verl.workers.utils.losses.ppo_loss` (see the module docstring).

    L = L_pg(gt_loss; train) − entropy_coeff · agg(H; train) + kl_loss_coef · agg(KL(π‖π_ref); kl)

    with the masks of `loss_row_masks`: pad rows and GT rows switched off by ``inject_when=all_fail``
    contribute exactly nothing to any term (their advantage is 0, but the entropy and KL terms
    would still move them); the KL term also skips the active GT rows (``KL_ON_GT_ROWS = False``):
    verl's KL estimators (k1 / k3 / ...) estimate KL(π‖π_ref) from tokens *sampled from π*, and the
    GT's tokens are teacher-forced, so on them the term is no KL estimate but an extra pull of
    log π(y_gt) towards log π_ref(y_gt) against the GT's own advantage. Normalisation is verl's
    (all rows, ``batch_num_tokens`` / ``global_batch_size``), the same for every term.
    The policy term is ``policy_loss.loss_mode``'s registered loss under ``gt_loss="ppo_clip"``,
    else `visurf_policy_loss_terms` (the GT variants; ``vanilla`` / ``visurf`` surrogate only).
    Without an `is_gt` column (plain GRPO, validation) this *is* verl's `ppo_loss` (delegated).

    Args:
        config: `(ActorConfig)` the actor config (bind with functools.partial).
        model_output: `(dict)` the engine's output: "log_probs" (+ "entropy").
        data: `(TensorDict)` the micro-batch: response_mask, old_log_probs, advantages, optional
            rollout_is_weights / ref_log_prob, dp_size / batch_num_tokens / global_batch_size, is_gt,
            optional ``visurf_is_pad`` / ``visurf_gt_active`` (`verl_ext.visurf.columns`).
        dp_group: data-parallel group (unused, as in verl's `ppo_loss`).
        gt_loss: `(str)` one of GT_LOSSES.
        luffy_gamma: `(float)` γ of the LUFFY shaping.

    Returns:
        policy_loss: `(torch.Tensor)` scalar.
        metrics: `(dict)` verl's actor metrics ("actor/pg_loss", "actor/pg_clipfrac", ...).
    """
    if gt_loss not in GT_LOSSES:
        raise ValueError(f"gt_loss must be one of {GT_LOSSES}, got {gt_loss!r}")
    is_gt = _is_gt_rows(data)
    if is_gt is None:
        return ppo_loss(config, model_output, data, dp_group)
    loss_mode = config.policy_loss.get("loss_mode", "vanilla")
    if gt_loss != "ppo_clip" and loss_mode not in SURROGATE_LOSS_MODES:
        raise ValueError(
            f"visurf.gt_loss={gt_loss!r} replaces the clipped surrogate; it cannot be combined with "
            f"policy_loss.loss_mode={loss_mode!r} (use one of {SURROGATE_LOSS_MODES})"
        )
    is_pad, gt_active = _row_column(data, C.IS_PAD), _row_column(data, C.GT_ACTIVE)

    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    entropy = model_output.get("entropy", None)
    if entropy is not None:
        entropy = no_padding_2_padding(entropy, data)

    config.global_batch_info["dp_size"] = data["dp_size"]
    config.global_batch_info["batch_num_tokens"] = data["batch_num_tokens"]
    config.global_batch_info["global_batch_size"] = data["global_batch_size"]
    config.global_batch_info["loss_scale_factor"] = config.loss_scale_factor
    if (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    ):
        metric_aggregation = AggregationType.SUM
    else:
        metric_aggregation = AggregationType.MEAN

    fields = ["response_mask", "old_log_probs", "advantages"]
    if "rollout_is_weights" in data:
        fields.append("rollout_is_weights")
    if "ref_log_prob" in data:
        fields.append("ref_log_prob")
    data = data.select(*fields).to_padded_tensor()
    response_mask = data["response_mask"].to(bool)
    train_mask, kl_mask = loss_row_masks(response_mask, is_gt, is_pad, gt_active)
    _fill_normalisers(config.global_batch_info, response_mask)
    loss_agg_mode = config.loss_agg_mode

    if gt_loss == "ppo_clip":
        from verl.trainer.ppo.core_algos import get_policy_loss_fn

        pg_loss, pg_metrics = get_policy_loss_fn(loss_mode)(
            old_log_prob=data["old_log_probs"],
            log_prob=log_prob,
            advantages=data["advantages"],
            response_mask=train_mask,
            loss_agg_mode=loss_agg_mode,
            config=config,
            rollout_is_weights=data.get("rollout_is_weights", None),
        )
    else:
        pg_loss, pg_metrics = visurf_policy_loss_terms(
            old_log_prob=data["old_log_probs"],
            log_prob=log_prob,
            advantages=data["advantages"],
            response_mask=train_mask,
            is_gt=is_gt,
            gt_loss=gt_loss,
            luffy_gamma=luffy_gamma,
            loss_agg_mode=loss_agg_mode,
            rollout_is_weights=data.get("rollout_is_weights", None),
            global_batch_info=config.global_batch_info,
            **_clip_ratios(config),
        )
        pg_metrics = {k: v.item() for k, v in pg_metrics.items()}
    metrics = Metric.from_dict(pg_metrics, aggregation=AggregationType.MEAN)
    metrics["actor/pg_loss"] = Metric(value=pg_loss, aggregation=metric_aggregation)
    policy_loss = pg_loss

    if entropy is not None:
        entropy_loss = agg_loss(
            loss_mat=entropy, loss_mask=train_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info
        )
        policy_loss -= config.entropy_coeff * entropy_loss
        metrics["actor/entropy_loss"] = Metric(value=entropy_loss, aggregation=metric_aggregation)

    if config.use_kl_loss:
        kld = kl_penalty(logprob=log_prob, ref_logprob=data["ref_log_prob"], kl_penalty=config.kl_loss_type)
        kl_loss = agg_loss(loss_mat=kld, loss_mask=kl_mask, loss_agg_mode=loss_agg_mode, **config.global_batch_info)
        policy_loss += kl_loss * config.kl_loss_coef
        metrics["kl_loss"] = Metric(value=kl_loss, aggregation=metric_aggregation)
        metrics["kl_coef"] = config.kl_loss_coef

    return policy_loss, metrics
