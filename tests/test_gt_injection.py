"""GT injection: which rows become the GT member, the group reward step, exact outcome rewrite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verl_ext.visurf.gt_injection import (
    gt_response_texts,
    group_reward_step,
    last_copy_per_group,
    select_gt_rows,
    set_outcome_scores,
)
from verl_ext.visurf.reward_control import RewardControl


def test_last_copy_per_group_on_interleaved_and_shuffled_rows():
    uids = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    assert last_copy_per_group(uids).tolist() == [False, False, True, False, False, True]
    shuffled = np.array(["b", "a", "b", "a", "a", "b"], dtype=object)
    assert last_copy_per_group(shuffled).tolist() == [False, False, False, False, True, True]
    assert last_copy_per_group(np.array([], dtype=object)).tolist() == []
    assert last_copy_per_group([7]).tolist() == [True]  # G = 0 rollouts + GT: one row


def test_select_gt_rows_skips_ineligible_groups():
    uids = np.array(["a", "a", "b", "b"], dtype=object)
    eligible = np.array([True, True, False, False])  # b: label missing or too long
    assert select_gt_rows(uids, eligible).tolist() == [False, True, False, False]


def test_gt_response_texts_align_and_report_missing_labels():
    control = RewardControl()
    texts, reasons = gt_response_texts(
        ['[{"bbox_2d": [1.0, 2, 30, 40], "point_2d": [5, 6]}]', "[]", None, "  ", "not json", "B"],
        ["refcoco", "grefcoco", "refcoco", "refcoco", "refcoco", "mathvista"],
        control,
    )
    assert texts[0] == '<answer>[{"bbox_2d": [1, 2, 30, 40], "point_2d": [5, 6]}]</answer>'
    assert texts[1] == "<answer>[]</answer>"  # non-object label: the GT answer is the empty list
    assert texts[5] == "<answer>B</answer>"
    assert reasons == ["", "", "no_label", "no_label", "bad_label", ""]


def test_group_reward_step_smoothing_and_always():
    # group a: rollouts 1, 3 vs GT 3 -> a rollout matches -> r_gt := 2 ; group b: rollouts 0, 0 vs GT 6 -> kept
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 0.0, 6.0])
    uids = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    is_gt = np.array([False, False, True, False, False, True])
    new, active = group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="always")
    assert new.tolist() == [1.0, 3.0, 2.0, 0.0, 0.0, 6.0]
    assert active.tolist() == is_gt.tolist()
    off, _ = group_reward_step(scores, uids, is_gt, smoothing=False, inject_when="always")
    assert off.tolist() == scores.tolist()


def test_group_reward_step_all_fail_keeps_gt_only_when_every_rollout_is_below():
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 0.0, 6.0, 2.0])
    uids = np.array(["a", "a", "a", "b", "b", "b", "c"], dtype=object)  # c: GT only, no rollout
    is_gt = np.array([False, False, True, False, False, True, True])
    _, active = group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="all_fail")
    assert active.tolist() == [False, False, False, False, False, True, True]
    with pytest.raises(ValueError, match="inject_when"):
        group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="sometimes")


def test_set_outcome_scores_rewrites_the_last_valid_token_exactly():
    token_scores = torch.zeros(3, 5)
    token_scores[0, 2] = 1.0
    token_scores[1, 4] = 2.0
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    target = torch.tensor([1.0 / 3.0, 2.0, 9.0])
    set_outcome_scores(token_scores, mask, target)
    assert token_scores[0].sum().item() == target[0].item()  # bit-exact (float32)
    assert token_scores[1].tolist() == [0, 0, 0, 0, 2.0]
    assert token_scores[2].tolist() == [0.0] * 5  # no response token: untouched
