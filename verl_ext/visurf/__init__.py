"""ViSurf: the method's functions (docs/METHOD.md §1-§3, §6); `verl_ext.registry` registers them with verl.

- `config`: `VisurfConfig` (the typed `visurf:` block), the option lists, the start-up checks
- `columns`: the batch column names (`is_gt`, ...)
- `group_step`: the pure group functions — GT row selection, smoothing (§3.3), all_fail, match
  scores, exact outcome rewrite (`apply_group_step`)
- `gt_injection`: verl agent-loop glue — the GT / pad agent loops and the agent-loop manager
- `gt_styles`: the seam for GT construction — one module per `visurf.gt_style` (`template`,
  `rollout_think`), `visurf.gt_loss_tokens`, the rewrite of GT rows after generation
- `reward_control`: GT rendering (§3.1) — `align_gt`, `gt_response`, the answer template's `{answer}` field
- `scoring`: one row through any verl-signature reward function with the GT rule's `extra_info`
  (§3.2) — `score_row`, `score_row_async` (the reward manager and the start-up check call it)
- `advantage`: `compute_visurf_outcome_advantage` (advantage estimator "visurf")
- `policy_loss`: `compute_policy_loss_visurf` (policy loss "visurf"), `visurf_policy_loss_terms`,
  `visurf_actor_loss` (GT-aware full actor loss for `actor_rollout_wg.set_loss_fn`)
"""
