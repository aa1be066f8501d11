"""ViSurf: the method's functions (METHOD.md §1, §3), registered into verl by `verl_ext.registry`.

- `reward_control`: `align_gt`, `smooth_gt_rewards`, `RewardControl` (the reward-control switches)
- `advantage`: `compute_visurf_outcome_advantage` (advantage estimator "visurf")
- `policy_loss`: `compute_policy_loss_visurf` (policy loss "visurf"), `visurf_policy_loss_terms`,
  `visurf_actor_loss` (GT-aware full actor loss for `actor_rollout_wg.set_loss_fn`)
"""
