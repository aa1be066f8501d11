"""The batch columns ViSurf adds to verl's ``DataProto`` — the one place their names are spelled.

Non-tensor columns (numpy arrays, one entry per row), written during generation by
``verl_ext.visurf.gt_injection`` and read by the reward manager, the group step
(``verl_ext.visurf.group_step``), the GT-aware actor loss and the trainer. verl carries
non-tensor columns through its reordering (``balance_batch``), so nothing depends on row order.
"""

IS_GT = "is_gt"  # bool: the row is its group's GT member (also the scorers' ``extra_info`` key)
IS_PAD = "visurf_is_pad"  # bool: the unsampled extra copy of a group without a GT (no gradient)
GT_TEXT = "visurf_gt_text"  # str: the aligned GT response on GT rows ("" elsewhere)
GT_ACTIVE = "visurf_gt_active"  # bool: GT row taking part in its group (inject_when=all_fail may drop it)
GT_SCORE_RAW = "visurf_gt_score_raw"  # float: GT reward before smoothing (nan elsewhere)
GT_SKIPPED = "visurf_gt_skipped"  # str: "" | "too_long" | "no_label" | "bad_label" on the would-be GT copy

# uid suffix of rows that leave their group (inactive GTs, pad rows): a one-member group, advantage 0
OWN_GROUP_SUFFIX = "/visurf-own-group"
GT_BORROWED = "visurf_gt_borrowed"  # int: context tokens of a GT row (response_mask 0, e.g. a rollout's think block)
GT_FALLBACK = "visurf_gt_fallback"  # bool: the GT style proposed nothing that fits; the GT row is the template's
