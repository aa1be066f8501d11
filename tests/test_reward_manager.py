"""ViSurf reward manager (verl 0.9.1 reward loop, per row) and the group step on its scores."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls
from verl_ext.reward_manager import ViSurfRewardManager

LABEL = json.dumps([{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}])
GOOD = '<think>ok.</think><answer>[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}]</answer>'  # 7
HALF = '<think>ok.</think><answer>[{"bbox_2d": [10, 100, 200, 210], "point_2d": [90, 110]}]</answer>'  # 6
BAD = "<think>ok.</think><answer>[{broken</answer>"  # 1 (think) + 1 (non_repeat) = 2
GT = '<answer>[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}]</answer>'  # 6 (no thinking reward)
RESP_LEN = 160


class ByteTokenizer:
    """Just what the manager needs: decode(ids) for byte-valued ids (0 = padding)."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids if int(i) != 0).decode()


def make_batch(responses, uids, is_gt, data_source="refcocog", label=LABEL):
    n, prompt_len = len(responses), 4
    resp = torch.zeros(n, RESP_LEN, dtype=torch.long)
    mask = torch.zeros(n, prompt_len + RESP_LEN, dtype=torch.long)
    mask[:, :prompt_len] = 1
    for i, text in enumerate(responses):
        ids = list(text.encode())
        assert len(ids) <= RESP_LEN
        resp[i, : len(ids)] = torch.tensor(ids)
        mask[i, prompt_len : prompt_len + len(ids)] = 1
    return DataProto.from_dict(
        tensors={"prompts": torch.ones(n, prompt_len, dtype=torch.long), "responses": resp, "attention_mask": mask,
                 "response_mask": mask[:, prompt_len:]},
        non_tensors={"data_source": np.array([data_source] * n, dtype=object),
                     "reward_model": np.array([{"ground_truth": label}] * n, dtype=object),
                     "extra_info": np.array([{}] * n, dtype=object),
                     "uid": np.array(uids, dtype=object), "is_gt": np.array(is_gt, dtype=bool)},
    )


def config(**visurf):
    return OmegaConf.create({
        "reward": {"custom_reward_function": {"path": None, "name": "compute_score"},
                   "reward_manager": {"source": "importlib", "name": "ViSurfRewardManager",
                                      "module": {"path": "pkg://verl_ext.reward_manager"}},
                   "sandbox_fusion": None},
        "visurf": visurf,
    })


def test_selected_by_module_path():
    assert resolve_reward_manager_cls(config()) is ViSurfRewardManager
    manager = load_reward_manager(config(gt_thinking_reward="full"), ByteTokenizer())
    assert isinstance(manager, ViSurfRewardManager) and manager.control.gt_thinking_reward == "full"


@pytest.mark.parametrize("mode, gt_score", [("zero", 6.0), ("full", 7.0)])
def test_run_single_per_row(mode, gt_score):
    manager = ViSurfRewardManager(config(gt_thinking_reward=mode), ByteTokenizer(), compute_score=None)
    batch = make_batch([GOOD, GT, GOOD], ["a", "a", "a"], [False, True, True])
    out = [manager.loop.run_until_complete(manager.run_single(batch[i : i + 1])) for i in range(3)]
    assert out[0]["reward_score"] == 7.0
    assert out[1]["reward_score"] == gt_score  # the aligned GT has no <think>: 0 or credited with the point
    # a GT row that does carry a think block: the same (a GT's thinking is never measured)
    assert out[2]["reward_score"] == (7.0 if mode == "full" else 6.0)
    info = out[2]["reward_extra_info"]
    assert info["thinking_format"] == (1.0 if mode == "full" else 0.0) and info["accuracy"] == 3.0
    assert set(info) == {"score", "thinking_format", "answer_format", "accuracy", "non_repeat", "invalid_reason"}


def scored_batch():
    """A mixed batch as the trainer holds it after gathering rewards (rm_scores -> token_level_*)."""
    manager = ViSurfRewardManager(config(), ByteTokenizer())
    # a: rollouts 7, 2 vs GT 6 -> smoothed to 4.5; b: rollouts 2, 2 vs GT 6 -> kept (GT carries signal)
    batch = make_batch([GOOD, BAD, GT, BAD, BAD, GT], list("aaabbb"), [0, 0, 1, 0, 0, 1])
    scores = torch.zeros(6, RESP_LEN)
    last = batch.batch["response_mask"].sum(-1) - 1
    infos = []
    for i in range(6):
        r = manager.loop.run_until_complete(manager.run_single(batch[i : i + 1]))
        scores[i, last[i]] = r["reward_score"]
        infos.append(r["reward_extra_info"])
    batch.batch["rm_scores"] = scores
    for key in infos[0]:
        batch.non_tensor_batch[key] = np.array([info[key] for info in infos])
    batch.batch["token_level_scores"] = batch.batch["rm_scores"]  # what ray_trainer does
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
    return batch, last


def test_group_step_on_manager_scores():
    """The manager's per-row scores (GT without thinking reward), then the group step exactly as
    the ViSurf agent-loop manager runs it on ``rm_scores``, then the trainer's metrics."""
    from recipe.visurf.visurf_trainer import visurf_step_metrics
    from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
    from verl_ext.visurf.group_step import apply_group_step

    batch, last = scored_batch()
    apply_group_step(batch, batch.non_tensor_batch["uid"], smoothing=True, inject_when="always")
    expected = [7.0, 2.0, 4.5, 2.0, 2.0, 6.0]
    assert batch.batch["rm_scores"].sum(-1).tolist() == expected
    assert batch.batch["token_level_rewards"] is batch.batch["rm_scores"]  # written in place: aliases hold
    assert batch.batch["rm_scores"][torch.arange(6), last].tolist() == expected  # at the last token
    assert batch.non_tensor_batch["visurf_gt_score_raw"][[2, 5]].tolist() == [6.0, 6.0]
    adv, _ = compute_visurf_outcome_advantage(batch.batch["token_level_rewards"], batch.batch["response_mask"],
                                              batch.non_tensor_batch["uid"])
    batch.batch["advantages"] = adv
    metrics = visurf_step_metrics(batch)
    assert metrics["visurf/gt_reward_before_smoothing"] == 6.0
    assert metrics["visurf/gt_reward_after_smoothing"] == (4.5 + 6.0) / 2
    assert metrics["visurf/gt_signal_share"] == 0.5  # group a: smoothed -> A_gt = 0
    assert metrics["visurf/rollout_reward_mean"] == (7 + 2 + 2 + 2) / 4
    assert metrics["visurf/rollout_accuracy_mean"] == 3 / 4
    assert metrics["visurf/rollout_invalid/bad_json"] == 3 / 4
    # idempotent: a second pass changes nothing
    apply_group_step(batch, batch.non_tensor_batch["uid"], smoothing=True, inject_when="always")
    assert batch.batch["rm_scores"].sum(-1).tolist() == expected


def test_group_step_switched_off_and_without_gt():
    from verl_ext.visurf.group_step import apply_group_step

    batch, _ = scored_batch()
    apply_group_step(batch, batch.non_tensor_batch["uid"], smoothing=False, inject_when="always")
    assert batch.batch["rm_scores"].sum(-1).tolist() == [7.0, 2.0, 6.0, 2.0, 2.0, 6.0]
    apply_group_step(batch, batch.non_tensor_batch["uid"], smoothing=True, inject_when="all_fail")
    # all_fail: group a has a rollout (7) above its GT -> the GT leaves the group; b keeps it
    assert batch.non_tensor_batch["visurf_gt_active"].tolist() == [False, False, False, False, False, True]
    batch.non_tensor_batch["is_gt"] = np.zeros(6, dtype=bool)  # e.g. GRPO: nothing to smooth
    apply_group_step(batch, batch.non_tensor_batch["uid"], smoothing=True, inject_when="always")
    assert batch.batch["rm_scores"].sum(-1).tolist() == [7.0, 2.0, 4.5, 2.0, 2.0, 6.0]
