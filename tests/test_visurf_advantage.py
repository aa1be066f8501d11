"""The "visurf" advantage estimator (docs/METHOD.md §1.4)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from verl_ext.visurf.advantage import compute_visurf_outcome_advantage

S3 = 1 / math.sqrt(3)  # unbiased std of (1, 0, 0)


def _rewards(scores, length=3, last_token=True):
    """Outcome rewards placed on the last response token, as verl's reward managers do."""
    rewards = torch.zeros(len(scores), length)
    rewards[:, -1 if last_token else 0] = torch.tensor(scores, dtype=torch.float32)
    return rewards


def _seq(adv):
    return adv[:, 0]


def test_augmented_group_hand_computed():
    # G = 2 failed rollouts + GT (the prototype's numbers: GT 1.155, rollouts -0.577)
    adv, ret = compute_visurf_outcome_advantage(_rewards([0.0, 0.0, 1.0]), torch.ones(3, 3), np.array(["u"] * 3))
    # mean 1/3, unbiased std sqrt(1/3): Â = (-1/3, -1/3, 2/3) / sqrt(1/3)
    torch.testing.assert_close(_seq(adv), torch.tensor([-1 / 3, -1 / 3, 2 / 3]) / S3, atol=1e-5, rtol=0)
    assert adv is ret
    torch.testing.assert_close(adv, _seq(adv)[:, None].expand(3, 3))  # broadcast over tokens


def test_one_member_all_equal_and_mixed_groups_shuffled():
    # x: one member -> 0 (verl's GRPO would give r itself); y: all equal -> 0
    # z: (1, 0, 0) -> (2/3, -1/3, -1/3)/std; w: (3, 1) -> (1, -1)/sqrt(2)
    index = np.array(["x", "y", "y", "y", "z", "z", "z", "w", "w"], dtype=object)
    scores = [2.5, 0.7, 0.7, 0.7, 1.0, 0.0, 0.0, 3.0, 1.0]
    expected = torch.tensor([0, 0, 0, 0, 2 / 3 / S3, -1 / 3 / S3, -1 / 3 / S3, 1 / math.sqrt(2), -1 / math.sqrt(2)])
    expected = expected * torch.tensor([1.0] * 7 + [1 / (1 + 1e-6 / math.sqrt(2))] * 2)  # ε in the denominator
    perm = np.random.default_rng(1).permutation(len(index))
    for idx in (index, np.unique(index, return_inverse=True)[1]):
        adv, _ = compute_visurf_outcome_advantage(_rewards([scores[i] for i in perm]), torch.ones(9, 3), idx[perm])
        torch.testing.assert_close(_seq(adv), expected[perm], atol=1e-5, rtol=0)
        assert torch.isfinite(adv).all()


def test_non_object_group_all_correct_is_zero():
    # every rollout answered [] correctly on a non-object sample and the GT scores the same
    adv, _ = compute_visurf_outcome_advantage(_rewards([4.0] * 9), torch.ones(9, 3), np.array([7] * 9))
    assert torch.equal(adv, torch.zeros(9, 3))


def test_response_mask_dtype_and_no_std_normalisation():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
    rewards = _rewards([1.0, 0.0, 0.5], last_token=False).double()
    adv, _ = compute_visurf_outcome_advantage(rewards, mask, np.array(["a"] * 3), norm_adv_by_std_in_grpo=False)
    assert adv.dtype == torch.float64
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)[:, None] * mask)


def test_algo_config_switch_wins():
    # verl's trainer passes `config` (the algorithm config) and not norm_adv_by_std_in_grpo
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": False})
    adv, _ = compute_visurf_outcome_advantage(_rewards([3.0, 1.0]), torch.ones(2, 3), np.array([0, 0]), config=config)
    torch.testing.assert_close(_seq(adv), torch.tensor([1.0, -1.0]))


def test_index_length_mismatch_raises():
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        compute_visurf_outcome_advantage(_rewards([1.0, 0.0]), torch.ones(2, 3), np.array([0, 0, 1]))


_reward = st.integers(0, 56).map(lambda k: k / 8)  # exactly representable, like the task rewards


@st.composite
def _groups(draw, min_size=1, reward=_reward):
    sizes = draw(st.lists(st.integers(min_size, 9), min_size=1, max_size=6))
    index = np.repeat(np.array([f"uid-{g}" for g in range(len(sizes))], dtype=object), sizes)
    scores = draw(st.lists(reward, min_size=len(index), max_size=len(index)))
    perm = np.array(draw(st.permutations(range(len(index)))))
    return torch.tensor(scores, dtype=torch.float32)[perm], index[perm]


@settings(max_examples=60, deadline=None)
@given(_groups(), st.booleans())
def test_property_per_group_mean_zero(batch, norm):
    scores, index = batch
    adv, _ = compute_visurf_outcome_advantage(
        _rewards(scores.tolist()), torch.ones(len(index), 3), index, norm_adv_by_std_in_grpo=norm
    )
    for uid in np.unique(index):
        assert abs(_seq(adv)[torch.from_numpy(index == uid)].mean().item()) < 1e-5


@settings(max_examples=60, deadline=None)
@given(_groups(min_size=2), st.booleans())
def test_property_equals_verl_grpo_without_gt_rows(batch, norm):
    scores, index = batch
    mask = torch.ones(len(index), 4)
    ours, _ = compute_visurf_outcome_advantage(_rewards(scores.tolist(), 4), mask, index, norm_adv_by_std_in_grpo=norm)
    verl_adv, _ = compute_grpo_outcome_advantage(
        _rewards(scores.tolist(), 4), mask, index, norm_adv_by_std_in_grpo=norm
    )
    torch.testing.assert_close(ours, verl_adv, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(_groups(min_size=2, reward=st.floats(-10, 10, width=32)))
def test_property_equals_verl_grpo_on_continuous_rewards(batch):
    scores, index = batch
    # verl's float32 statistics lose precision when a group's spread is tiny; compare where it is not
    assume(all(np.ptp(scores[torch.from_numpy(index == u)].numpy()) > 1e-3 for u in np.unique(index)))
    mask = torch.ones(len(index), 2)
    ours, _ = compute_visurf_outcome_advantage(_rewards(scores.tolist(), 2), mask, index)
    verl_adv, _ = compute_grpo_outcome_advantage(_rewards(scores.tolist(), 2), mask, index)
    torch.testing.assert_close(ours, verl_adv, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# issue 12 item 5: a smoothed GT gets exactly Â = 0 in float32
# --------------------------------------------------------------------------------------------
def _smoothed_group(rollouts):
    """rollouts + a GT above them all, smoothed by the group step as in training (float32 rm_scores)."""
    from verl_ext.visurf.group_step import group_reward_step

    scores = torch.tensor([*rollouts, 100.0], dtype=torch.float32)
    uids = np.array(["u"] * len(scores), dtype=object)
    is_gt = np.array([False] * len(rollouts) + [True])
    match = scores.double().clone()
    match[-1] = -math.inf  # a rollout "matches" the GT (e.g. compared without the format point)
    new, _ = group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="always", match_scores=match)
    return new, uids


def test_smoothed_gt_advantage_is_exactly_zero_on_the_issue_values():
    # the issue's example: r_gt = mean rounded to float32 left |Â_gt| ≈ 4.5e-4 (counted as "signal")
    new, uids = _smoothed_group([4 + 5 / 119] + [4 + 5 / 120] * 7)
    assert new[-1].item() != float(np.mean(np.float64(new[:-1].numpy())))  # r_gt is a rounded mean
    adv, _ = compute_visurf_outcome_advantage(_rewards(new.tolist()), torch.ones(9, 3), uids)
    assert adv[-1].abs().max().item() == 0.0
    assert (adv[:-1, 0] != 0).all()  # the rollouts keep their (tiny-spread) signal


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-8, 8, width=32, allow_nan=False), min_size=2, max_size=16),
       st.sampled_from([True, False]))
def test_property_smoothed_gt_advantage_is_exactly_zero(rollouts, norm):
    assume(max(rollouts) > min(rollouts))
    new, uids = _smoothed_group(rollouts)
    adv, _ = compute_visurf_outcome_advantage(_rewards(new.tolist()), torch.ones(len(new), 3), uids,
                                              norm_adv_by_std_in_grpo=norm)
    assert adv[-1].abs().max().item() == 0.0
