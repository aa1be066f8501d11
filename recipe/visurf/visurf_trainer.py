"""ViSurf trainer: verl's PPO trainer with the ground truth as one member of every group.

Everything algorithmic lives in ``verl_ext``; this class only wires it into verl's loop
(``trainer.use_v1=False``, the classic trainer verl's recipes build on):

* GT rows (and the pad rows of groups without a GT) are produced during generation by
  ``VisurfAgentLoopManager`` (``verl_ext.visurf.gt_injection``), which also runs the group step
  (smoothing, ``inject_when=all_fail``) where the whole batch of rewards is visible;
* ``_compute_old_log_prob``: GT rows are checked against their group (``check_gt_rows``: same
  prompt ids, images, 3-D rope positions); after verl's old-log-prob pass, GT and pad rows get
  ``rollout_log_probs := old_log_probs`` (they were never sampled), the rollout-only entropy and
  rollout-vs-actor log-prob metrics are taken, and GT rows switched off by ``all_fail`` as well as
  pad rows leave their group (a group of their own, so the ``visurf`` estimator gives them Â = 0);
* ``init_workers``: with ViSurf on, ``visurf_actor_loss`` is installed as the actor's full loss
  with ``set_loss_fn`` — it sees the ``is_gt`` / pad / active columns (pad and switched-off GT rows
  train nothing, the GT variants of ``visurf.gt_loss``);
* ``_update_actor``: the ``visurf/*`` metrics are logged with the actor's metrics.

verl metrics that include the GT (and pad) rows are listed in the README ("Using the recipe");
``visurf/rollout_*`` are the on-policy-only counterparts.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from verl_ext.rewards.common import COMPONENTS
from verl_ext.visurf import columns as C
from verl_ext.visurf.config import visurf_config
from verl_ext.visurf.group_step import own_groups, row_mask
from verl_ext.visurf.gt_injection import check_gt_rows
from verl_ext.visurf.gt_styles import gt_style_metrics


def rollout_rows(batch: DataProto) -> np.ndarray:
    """The sampled (on-policy) rows: neither the GT member nor a pad row."""
    return ~row_mask(batch, C.IS_GT) & ~row_mask(batch, C.IS_PAD)


def visurf_step_metrics(batch: DataProto) -> dict[str, float]:
    """The ``visurf/*`` metrics of one training batch (after advantages were computed).

    GT reward before/after smoothing, GT advantage mean, share of GT rows that carried signal
    (Â_gt ≠ 0: a smoothed or switched-off GT has Â_gt = 0 exactly), rollout-only reward, reward
    components (``accuracy``, formats, ...) and invalid-answer shares, GT rows injected /
    switched off / skipped (too long, no or bad label; each skip leaves a pad row), and the GT
    style's (``gt_styles.gt_style_metrics``: fallbacks, borrowed share, trained GT tokens).
    """
    nt = batch.non_tensor_batch
    n = len(batch)
    is_gt = row_mask(batch, C.IS_GT)
    active = row_mask(batch, C.GT_ACTIVE, is_gt)
    skipped = np.asarray(nt.get(C.GT_SKIPPED, np.full(n, "", dtype=object)), dtype=object)
    scores = batch.batch["token_level_scores"].sum(-1).double()
    gt = torch.from_numpy(is_gt)
    rollout = rollout_rows(batch)
    metrics = {
        "visurf/gt_injected": float(is_gt.sum()),
        "visurf/gt_inactive": float((is_gt & ~active).sum()),
        "visurf/gt_skipped_too_long": float((skipped == "too_long").sum()),
        "visurf/gt_skipped_no_label": float((skipped == "no_label").sum()),
        "visurf/gt_skipped_bad_label": float((skipped == "bad_label").sum()),
        "visurf/rollout_reward_mean": float(scores[torch.from_numpy(rollout)].mean()) if rollout.any() else 0.0,
    }
    if rollout.any():
        for name in COMPONENTS:  # reward components of the on-policy rows (reward_extra_info columns)
            if name in nt:
                values = np.asarray(nt[name], dtype=np.float64)[rollout]
                metrics[f"visurf/rollout_{name}_mean"] = float(values.mean())
        if "invalid_reason" in nt:
            reasons, counts = np.unique(np.asarray(nt["invalid_reason"], dtype=str)[rollout], return_counts=True)
            for reason, count in zip(reasons, counts):
                if reason:
                    metrics[f"visurf/rollout_invalid/{reason}"] = count / int(rollout.sum())
    if is_gt.any():
        raw = np.asarray(nt.get(C.GT_SCORE_RAW, np.full(n, np.nan)), dtype=float)
        mask = batch.batch["response_mask"].double()
        seq_adv = (batch.batch["advantages"].double() * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        gt_adv = seq_adv[gt]
        metrics.update({
            "visurf/gt_reward_before_smoothing": float(np.nanmean(raw[is_gt])),
            "visurf/gt_reward_after_smoothing": float(scores[gt].mean()),
            "visurf/gt_advantage_mean": float(gt_adv.mean()),
            "visurf/gt_signal_share": float((gt_adv != 0).double().mean()),
        })
        metrics.update(gt_style_metrics(batch))  # borrowed share, fallbacks, trained GT tokens
    return metrics


def rollout_logprob_metrics(batch: DataProto, old_log_probs: torch.Tensor, entropys: torch.Tensor | None,
                            loss_agg_mode: str, loss_scale_factor=None) -> dict[str, float]:
    """verl's on-policy diagnostics over the sampled rows only (GT and pad rows excluded).

    * ``visurf/rollout_entropy``: verl's ``actor/entropy`` (``agg_loss`` of the old-policy token
      entropies with the actor's ``loss_agg_mode``) over rollout rows;
    * ``visurf/rollout_probs_diff_{valid,max,mean,std}``, ``visurf/rollout_actor_probs_pearson_corr``:
      verl's ``calculate_debug_metrics`` (``training/rollout_probs_diff_*``: sampler vs actor
      probabilities) over rollout rows — GT / pad rows would enter verl's version as exact matches.
    """
    rows = torch.from_numpy(rollout_rows(batch))
    metrics: dict[str, float] = {}
    if not rows.any():
        return metrics
    mask = batch.batch["response_mask"][rows]
    if entropys is not None:
        metrics["visurf/rollout_entropy"] = float(agg_loss(loss_mat=entropys[rows], loss_mask=mask,
                                                           loss_agg_mode=loss_agg_mode,
                                                           loss_scale_factor=loss_scale_factor).detach().item())
    if "rollout_log_probs" in batch.batch.keys():
        from verl.utils.debug.metrics import calculate_debug_metrics

        sub = DataProto.from_dict(tensors={
            "rollout_log_probs": batch.batch["rollout_log_probs"][rows], "old_log_probs": old_log_probs[rows],
            "response_mask": mask, "responses": batch.batch["responses"][rows],
        })
        for key, value in calculate_debug_metrics(sub).items():
            metrics["visurf/" + key.split("/", 1)[1]] = float(value)
    return metrics


class RayViSurfTrainer(RayPPOTrainer):
    """verl's ``RayPPOTrainer`` with ViSurf's GT member in every rollout group."""

    def init_workers(self):
        super().init_workers()
        visurf = visurf_config(self.config.get("visurf"))
        if visurf.enable:
            from verl.utils.config import omega_conf_to_dataclass

            from verl_ext.visurf.policy_loss import visurf_actor_loss

            actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(
                visurf_actor_loss, config=actor_config, gt_loss=visurf.gt_loss, luffy_gamma=float(visurf.luffy_gamma),
            ))

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        if C.IS_GT not in batch.non_tensor_batch:
            return old_log_prob, mfu
        is_gt, is_pad = row_mask(batch, C.IS_GT), row_mask(batch, C.IS_PAD)
        old = old_log_prob.batch["old_log_probs"]
        actor = self.config.actor_rollout_ref.actor
        self._visurf_logprob_metrics = rollout_logprob_metrics(
            batch, old, old_log_prob.batch["entropys"] if "entropys" in old_log_prob.batch.keys() else None,
            actor.loss_agg_mode, actor.get("loss_scale_factor"))
        self._gt_rows_checked = check_gt_rows(batch)  # same prompt/images/positions as the group
        teacher_forced = torch.from_numpy(is_gt | is_pad)
        if "rollout_log_probs" in batch.batch.keys() and teacher_forced.any():  # never sampled: π_rollout := π_old
            rlp = batch.batch["rollout_log_probs"]
            rlp[teacher_forced] = old[teacher_forced].to(rlp.dtype)
        # all_fail-inactive GTs and pad rows leave their group: one-member group -> Â = 0
        leave = (is_gt & ~row_mask(batch, C.GT_ACTIVE, is_gt)) | is_pad
        if leave.any():
            batch.non_tensor_batch["uid"] = own_groups(batch.non_tensor_batch["uid"], leave)
        return old_log_prob, mfu

    def _log_rollout_data(self, batch: DataProto, reward_extra_infos_dict: dict, timing_raw: dict,
                          rollout_data_dir: str):
        """verl's rollout dump (``trainer.rollout_data_dir``) plus, per row: ``uid``, ``is_gt``,
        ``is_pad``, the sequence advantage, the response token ids and their loss mask (so GT rows can be
        checked exactly)."""
        extra = dict(reward_extra_infos_dict)
        mask = batch.batch["response_mask"].bool()
        extra["uid"] = [str(u) for u in batch.non_tensor_batch["uid"]]
        extra["is_gt"] = row_mask(batch, C.IS_GT).tolist()
        extra["is_pad"] = row_mask(batch, C.IS_PAD).tolist()
        extra["advantage"] = ((batch.batch["advantages"] * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tolist()
        # every response token (GT rows may hold context tokens with response_mask 0: gt_styles) and its loss mask
        valid = batch.batch["attention_mask"][:, -mask.shape[-1]:].bool()
        extra["response_ids"] = [row[v].tolist() for row, v in zip(batch.batch["responses"], valid)]
        extra["response_mask"] = [m[v].int().tolist() for m, v in zip(mask, valid)]
        super()._log_rollout_data(batch, extra, timing_raw, rollout_data_dir)

    def _update_actor(self, batch: DataProto) -> DataProto:
        output = super()._update_actor(batch)
        if C.IS_GT in batch.non_tensor_batch:
            step_metrics = visurf_step_metrics(batch)
            step_metrics["visurf/gt_rows_checked"] = float(getattr(self, "_gt_rows_checked", 0))
            step_metrics.update(getattr(self, "_visurf_logprob_metrics", {}))
            output.meta_info.setdefault("metrics", {}).update(step_metrics)
        return output
