"""Trainer-side metrics: on-policy (rollout-only) counterparts of verl metrics that include GT rows."""

import math

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.utils.debug.metrics import calculate_debug_metrics

from recipe.visurf.visurf_trainer import rollout_logprob_metrics, rollout_rows, visurf_step_metrics

# rows: rollout (probs 0.7 vs actor 0.5), rollout (exact), GT, pad — GT and pad rows carry
# rollout_log_probs := old_log_probs, as the trainer sets them (they were never sampled)
RESP = 3


def _batch():
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    old = torch.full((4, RESP), math.log(0.5))
    rollout = old.clone()
    rollout[0, :2] = math.log(0.7)
    entropys = torch.tensor([[1.0, 3.0, 9.0], [2.0, 2.0, 9.0], [0.5, 0.5, 0.5], [7.0, 9.0, 9.0]])
    batch = DataProto.from_dict(
        tensors={"rollout_log_probs": rollout, "response_mask": mask, "responses": torch.ones(4, RESP, dtype=torch.long),
                 "token_level_scores": torch.tensor([[0, 4.0, 0], [0, 2.0, 0], [0, 0, 3.0], [1.0, 0, 0]]),
                 "advantages": torch.tensor([1.0, -1.0, 0.0, 0.0])[:, None].expand(4, RESP).clone()},
        non_tensors={"uid": np.array(["u", "u", "u", "u/visurf-own-group"], dtype=object),
                     "is_gt": np.array([False, False, True, False]),
                     "visurf_is_pad": np.array([False, False, False, True]),
                     "visurf_gt_skipped": np.array(["", "", "", ""], dtype=object),
                     "visurf_gt_score_raw": np.array([np.nan, np.nan, 5.0, np.nan]),
                     "accuracy": np.array([3.0, 0.0, 3.0, 0.0])},
    )
    return batch, old, entropys


def test_rollout_rows_exclude_gt_and_pad():
    batch, _, _ = _batch()
    assert rollout_rows(batch).tolist() == [True, True, False, False]


def test_rollout_only_logprob_and_entropy_metrics_hand_computed():
    batch, old, entropys = _batch()
    m = rollout_logprob_metrics(batch, old, entropys, loss_agg_mode="token-mean")
    # rollout tokens: |0.7 - 0.5| twice, 0 twice
    assert m["visurf/rollout_probs_diff_max"] == pytest.approx(0.2)
    assert m["visurf/rollout_probs_diff_mean"] == pytest.approx(0.1)
    assert m["visurf/rollout_probs_diff_valid"] == 1
    # verl's own metric over all rows is diluted by the 4 exact GT / pad tokens: 0.4 / 8
    batch.batch["old_log_probs"] = old
    verl_mean = calculate_debug_metrics(batch)["training/rollout_probs_diff_mean"]
    assert verl_mean == pytest.approx(0.4 / 8)
    # entropy: token-mean over the rollout rows' 4 valid tokens (1 + 3 + 2 + 2) / 4
    assert m["visurf/rollout_entropy"] == pytest.approx(2.0)


def test_step_metrics_count_rollouts_only():
    batch, _, _ = _batch()
    m = visurf_step_metrics(batch)
    assert m["visurf/rollout_reward_mean"] == pytest.approx(3.0)  # (4 + 2) / 2, pad row excluded
    assert m["visurf/rollout_accuracy_mean"] == pytest.approx(1.5)
    assert m["visurf/gt_injected"] == 1.0
    assert m["visurf/gt_reward_before_smoothing"] == 5.0 and m["visurf/gt_reward_after_smoothing"] == 3.0
    assert m["visurf/gt_signal_share"] == 0.0  # Â_gt = 0 exactly counts as no signal
