"""ViSurf trainer: verl's PPO trainer with the ground truth as one member of every group.

Everything algorithmic lives in ``verl_ext``; this class only wires it into verl's loop
(``trainer.use_v1=False``, the classic trainer verl's recipes build on):

* GT rows are produced during generation by ``VisurfAgentLoopManager`` / the ``visurf_gt``
  agent loop (``verl_ext.visurf.gt_injection``), which also runs reward smoothing and
  ``inject_when=all_fail`` where the whole batch of rewards is visible;
* ``_compute_old_log_prob``: GT rows are checked against their group (``check_gt_rows``:
  same prompt ids, images, 3-D rope positions); after verl's old-log-prob pass, GT rows get
  ``rollout_log_probs := old_log_probs`` (the GT was teacher-forced, no sampler log-probs
  exist) and GT rows switched off by ``all_fail`` leave their group (their own ``uid``, so
  the ``visurf`` estimator gives them advantage 0);
* ``init_workers``: GT-aware loss variants (``visurf.gt_loss``) are installed as the actor's
  full loss with ``set_loss_fn`` — the loss then sees the ``is_gt`` column;
* ``_update_actor``: the ``visurf/*`` metrics are computed from the batch and logged with
  the actor's metrics.

verl's own ``critic/score``, ``critic/rewards``, ``critic/advantages`` and ``response_length``
metrics include the GT rows; ``visurf/rollout_*`` are the on-policy-only counterparts.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from verl_ext.rewards.common import COMPONENTS
from verl_ext.visurf.gt_injection import (
    COL_GT_ACTIVE,
    COL_GT_SCORE_RAW,
    COL_GT_SKIPPED,
    COL_IS_GT,
    check_gt_rows,
)

GT_OFF_SUFFIX = "/visurf-gt-off"
GT_SIGNAL_EPS = 1e-4  # |Â_gt| above this: the GT carried signal (float32 rewards: smoothed GTs give ~1e-6)


def visurf_step_metrics(batch: DataProto) -> dict[str, float]:
    """The ``visurf/*`` metrics of one training batch (after advantages were computed).

    GT reward before/after smoothing, GT advantage mean, share of groups where the GT carried
    signal (|Â_gt| > GT_SIGNAL_EPS), rollout-only reward, reward components (``accuracy``, formats, ...)
    and invalid-answer shares, GT rows injected / switched off / skipped (too long, no or bad
    label).
    """
    nt = batch.non_tensor_batch
    n = len(batch)
    is_gt = np.asarray(nt.get(COL_IS_GT, np.zeros(n, dtype=bool)), dtype=bool)
    active = np.asarray(nt.get(COL_GT_ACTIVE, is_gt), dtype=bool)
    skipped = np.asarray(nt.get(COL_GT_SKIPPED, np.full(n, "", dtype=object)), dtype=object)
    scores = batch.batch["token_level_scores"].sum(-1).double()
    gt = torch.from_numpy(is_gt)
    rollout = ~gt
    metrics = {
        "visurf/gt_injected": float(is_gt.sum()),
        "visurf/gt_inactive": float((is_gt & ~active).sum()),
        "visurf/gt_skipped_too_long": float((skipped == "too_long").sum()),
        "visurf/gt_skipped_no_label": float((skipped == "no_label").sum()),
        "visurf/gt_skipped_bad_label": float((skipped == "bad_label").sum()),
        "visurf/rollout_reward_mean": float(scores[rollout].mean()) if rollout.any() else 0.0,
    }
    if (~is_gt).any():
        for name in COMPONENTS:  # reward components of the on-policy rows (reward_extra_info columns)
            if name in nt:
                values = np.asarray(nt[name], dtype=np.float64)[~is_gt]
                metrics[f"visurf/rollout_{name}_mean"] = float(values.mean())
        if "invalid_reason" in nt:
            reasons, counts = np.unique(np.asarray(nt["invalid_reason"], dtype=str)[~is_gt], return_counts=True)
            for reason, count in zip(reasons, counts):
                if reason:
                    metrics[f"visurf/rollout_invalid/{reason}"] = count / int((~is_gt).sum())
    if is_gt.any():
        raw = np.asarray(nt.get(COL_GT_SCORE_RAW, np.full(n, np.nan)), dtype=float)
        mask = batch.batch["response_mask"].double()
        seq_adv = (batch.batch["advantages"].double() * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        gt_adv = seq_adv[gt]
        metrics.update({
            "visurf/gt_reward_before_smoothing": float(np.nanmean(raw[is_gt])),
            "visurf/gt_reward_after_smoothing": float(scores[gt].mean()),
            "visurf/gt_advantage_mean": float(gt_adv.mean()),
            # 1e-4, not 0: a smoothed r_gt is the rollout mean rounded to float32 (|Â_gt| ~ 1e-6)
            "visurf/gt_signal_share": float((gt_adv.abs() > GT_SIGNAL_EPS).double().mean()),
        })
    return metrics


def _is_gt(batch: DataProto) -> np.ndarray | None:
    values = batch.non_tensor_batch.get(COL_IS_GT)
    return None if values is None else np.asarray(values, dtype=bool)


class RayViSurfTrainer(RayPPOTrainer):
    """verl's ``RayPPOTrainer`` with ViSurf's GT member in every rollout group."""

    def init_workers(self):
        super().init_workers()
        visurf = self.config.get("visurf", {})
        gt_loss = visurf.get("gt_loss", "ppo_clip")
        if visurf.get("enable", True) and gt_loss != "ppo_clip":
            from verl.utils.config import omega_conf_to_dataclass

            from verl_ext.visurf.policy_loss import visurf_actor_loss

            actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(
                visurf_actor_loss, config=actor_config, gt_loss=gt_loss,
                luffy_gamma=float(visurf.get("luffy_gamma", 0.1)),
            ))

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        is_gt = _is_gt(batch)
        if is_gt is not None and is_gt.any():
            self._gt_rows_checked = check_gt_rows(batch)  # same prompt/images/positions as the group
            gt = torch.from_numpy(is_gt)
            if "rollout_log_probs" in batch.batch.keys():
                rlp = batch.batch["rollout_log_probs"]
                rlp[gt] = old_log_prob.batch["old_log_probs"][gt].to(rlp.dtype)
            active = np.asarray(batch.non_tensor_batch.get(COL_GT_ACTIVE, is_gt), dtype=bool)
            off = is_gt & ~active
            if off.any():  # all_fail: the GT leaves its group -> single-member group -> Â = 0
                uids = batch.non_tensor_batch["uid"].astype(object)
                uids[off] = np.char.add(uids[off].astype(str), GT_OFF_SUFFIX).astype(object)
                batch.non_tensor_batch["uid"] = uids
        return old_log_prob, mfu

    def _log_rollout_data(self, batch: DataProto, reward_extra_infos_dict: dict, timing_raw: dict,
                          rollout_data_dir: str):
        """verl's rollout dump (``trainer.rollout_data_dir``) plus, per row: ``uid``, ``is_gt``,
        the sequence advantage and the response token ids (so GT rows can be checked exactly)."""
        extra = dict(reward_extra_infos_dict)
        mask = batch.batch["response_mask"].bool()
        extra["uid"] = [str(u) for u in batch.non_tensor_batch["uid"]]
        is_gt = _is_gt(batch)
        extra["is_gt"] = (is_gt if is_gt is not None else np.zeros(len(batch), dtype=bool)).tolist()
        extra["advantage"] = ((batch.batch["advantages"] * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tolist()
        extra["response_ids"] = [row[m].tolist() for row, m in zip(batch.batch["responses"], mask)]
        super()._log_rollout_data(batch, extra, timing_raw, rollout_data_dir)

    def _update_actor(self, batch: DataProto) -> DataProto:
        output = super()._update_actor(batch)
        if _is_gt(batch) is not None:
            step_metrics = visurf_step_metrics(batch)
            step_metrics["visurf/gt_rows_checked"] = float(getattr(self, "_gt_rows_checked", 0))
            output.meta_info.setdefault("metrics", {}).update(step_metrics)
        return output



from verl.trainer.main_ppo_v0 import BaseTaskRunner, TaskRunner  # noqa: E402


class ViSurfTaskRunner(BaseTaskRunner):
    """verl's classic ``TaskRunner`` building ``RayViSurfTrainer`` instead of ``RayPPOTrainer``.

    Kept in an importable module on purpose: ray pickles a class defined in ``__main__`` by
    value, and the swap below would then silently not happen.
    """

    def run(self, config):
        import verl.trainer.main_ppo_v0 as main_ppo_v0

        main_ppo_v0.RayPPOTrainer = RayViSurfTrainer  # this ray actor's process only
        return TaskRunner.__ray_metadata__.modified_class.run(self, config)
