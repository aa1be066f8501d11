"""GT injection and the group step: which rows become the GT member, smoothing, all_fail, exact rewrite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.group_step import (
    all_fail_active,
    group_reward_step,
    last_copy_per_group,
    select_gt_rows,
    set_outcome_scores,
    task_solved,
)
from verl_ext.visurf.gt_injection import gt_response_texts


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
    control = VisurfConfig()
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


def test_all_fail_keeps_the_gt_only_where_no_rollout_solved_the_task():
    # accuracy per row (grounding: solved at 3): a has a solved rollout, b none, c is GT only
    scores = torch.tensor([5.0, 3.0, 6.0, 2.0, 4.5, 6.0, 2.0])
    accuracy = np.array([3.0, 1.0, 3.0, 0.0, 2.5, 3.0, 3.0])
    uids = np.array(["a", "a", "a", "b", "b", "b", "c"], dtype=object)
    is_gt = np.array([False, False, True, False, False, True, True])
    sources = ["refcoco"] * 7
    solved = task_solved(scores, uids, is_gt, sources, accuracy)
    assert solved.tolist() == [True, False, True, False, False, True, True]
    assert all_fail_active(uids, is_gt, solved).tolist() == [False, False, False, False, False, True, True]
    _, active = group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="all_fail", solved=solved)
    assert active.tolist() == [False, False, False, False, False, True, True]
    with pytest.raises(ValueError, match="inject_when"):
        group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="sometimes")
    with pytest.raises(ValueError, match="solved"):
        group_reward_step(scores, uids, is_gt, smoothing=True, inject_when="all_fail")


def test_task_solved_thresholds_per_task_and_for_unknown_sources():
    # gui / math solve at accuracy 1; grounding only at the full 3; NaN accuracy falls back to the reward
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0, 7.0, 1.0, 0.5, 0.75])
    accuracy = np.array([1.0, 0.0, 1.0, np.nan, 2.9, 1.0, np.nan, np.nan])
    sources = ["omniact", "omniact", "geo3k", "geo3k", "refcocog", "gsm8k", "gsm8k", "gsm8k"]
    uids = np.array(["g", "g", "m", "m", "r", "u", "u", "u"], dtype=object)
    is_gt = np.array([False, False, False, False, False, False, False, True])
    # unknown source (gsm8k): solved when as accurate as the group's GT row (its reward 0.75 here)
    assert task_solved(scores, uids, is_gt, sources, accuracy).tolist() == [
        True, False, True, True, False, True, False, True]
    # no accuracy column at all: the reward is compared (math reward 2 >= 1, 1 >= 1)
    assert task_solved(scores[2:4], uids[2:4], is_gt[2:4], sources[2:4]).tolist() == [True, True]
    # an unknown source without a GT row in the group: nothing counts as solved
    assert task_solved(torch.tensor([9.0]), ["x"], [False], ["custom"]).tolist() == [False]


def test_all_fail_differs_from_always_on_a_group_with_a_correct_rollout():
    """Issue 12 item 3: a rollout that solved the task (full accuracy) but scores below the GT (here
    a repetition penalty: non_repeat 0) must switch the GT off under all_fail; under always the GT
    keeps its signal. (Before: all_fail kept the GT whenever every rollout scored below it.)"""
    from verl import DataProto

    from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
    from verl_ext.visurf.group_step import apply_group_step, own_groups

    # grounding, gt_thinking_reward=zero: rollout 0 correct but repetitive (1+2+3+0 = 6, 5 without
    # thinking), rollouts 1-2 wrong (1+2+0+1 = 4), GT (0+2+3+1 = 6)
    rm = torch.zeros(4, 2)
    rm[:, -1] = torch.tensor([6.0, 4.0, 4.0, 6.0])

    def advantages(mode):
        batch = DataProto.from_dict(
            tensors={"rm_scores": rm.clone(), "response_mask": torch.ones(4, 2, dtype=torch.long)},
            non_tensors={"uid": np.array(["u"] * 4, dtype=object), "is_gt": np.array([False] * 3 + [True]),
                         "data_source": np.array(["refcoco"] * 4, dtype=object),
                         "accuracy": np.array([3.0, 0.0, 0.0, 3.0]), "thinking_format": np.array([1.0, 1, 1, 0])},
        )
        apply_group_step(batch, batch.non_tensor_batch["uid"], True, mode, "zero")
        gt, active = batch.non_tensor_batch["is_gt"], batch.non_tensor_batch["visurf_gt_active"]
        uids = own_groups(batch.non_tensor_batch["uid"], gt & ~active)  # what the trainer does
        adv, _ = compute_visurf_outcome_advantage(batch.batch["rm_scores"], batch.batch["response_mask"], uids)
        return adv[:, 0]

    always, all_fail = advantages("always"), advantages("all_fail")
    assert always[3] > 0.5  # no rollout matches the GT on the task rewards (5 < 6): GT not smoothed
    assert all_fail[3] == 0  # a rollout solved the task: the GT leaves the group
    # the group trains like GRPO over the 3 rollouts: (6 - 14/3) / std(6, 4, 4)
    expected = (6 - 14 / 3) / torch.tensor([6.0, 4.0, 4.0]).std()
    assert all_fail[0].item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.allclose(always, all_fail)


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


def _hand_made_batch():
    """2 groups x (2 rollouts + GT), prompt length 3, response length 4, Qwen2.5-VL 4xL positions."""
    from verl import DataProto

    B, P, R = 6, 3, 4
    prompts = torch.tensor([[0, 11, 12]] * 3 + [[21, 22, 23]] * 3)
    responses = torch.randint(30, 40, (B, R))
    resp_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]] * 2)
    attn = torch.cat([torch.tensor([[0, 1, 1]] * 3 + [[1, 1, 1]] * 3), resp_mask], dim=1)
    base = torch.arange(P + R).expand(4, -1)
    pos = torch.stack([base + (10 if i >= 3 else 0) for i in range(B)])  # [B, 4, P+R]
    pix = [torch.full((4, 6), float(i // 3)) for i in range(B)]
    mm = np.array([{"pixel_values": p, "image_grid_thw": torch.tensor([[1, 2, 2]])} for p in pix], dtype=object)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "response_mask": resp_mask, "attention_mask": attn,
                 "position_ids": pos},
        non_tensors={"uid": np.array(["u1"] * 3 + ["u2"] * 3, dtype=object),
                     "is_gt": np.array([False, False, True] * 2), "multi_modal_inputs": mm},
    )


def test_check_gt_rows_accepts_a_consistent_batch_in_any_order():
    from verl_ext.visurf.gt_injection import check_gt_rows

    batch = _hand_made_batch()
    assert check_gt_rows(batch) == 2
    perm = torch.tensor([5, 0, 3, 2, 4, 1])
    batch.reorder(perm)  # verl's balancing reorders rows: nothing may depend on position
    assert check_gt_rows(batch) == 2


@pytest.mark.parametrize("corrupt, what", [
    (lambda b: b.batch["prompts"][2].__setitem__(1, 99), "prompt ids"),
    (lambda b: b.batch["position_ids"][2, 1].__setitem__(4, 77), "position ids"),
    (lambda b: b.non_tensor_batch["multi_modal_inputs"][5].__setitem__("pixel_values", torch.zeros(4, 6)),
     "multi_modal_inputs"),
])
def test_check_gt_rows_names_what_differs(corrupt, what):
    from verl_ext.visurf.gt_injection import check_gt_rows

    batch = _hand_made_batch()
    corrupt(batch)
    with pytest.raises(RuntimeError, match=what):
        check_gt_rows(batch)


CASES = {  # data_source, label, formatted-but-wrong rollout, extra_info
    "grounding": ("refcoco", '[{"bbox_2d": [100, 100, 300, 300], "point_2d": [200, 200]}]',
                  '<think>left.</think><answer>[{"bbox_2d": [100, 100, 300, 300], "point_2d": [500, 500]}]</answer>',
                  {}),
    "gui": ("omniact", '[{"bbox_2d": [100, 100, 300, 300], "point_2d": [200, 200]}]',
            '<think>menu.</think><answer>[{"point_2d": [600, 600]}]</answer>', {}),
    "math": ("geo3k", "7", "<think>compute</think><answer>5</answer>", {}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_gt_keeps_its_signal_when_every_rollout_is_formatted_but_wrong(task):
    """Real scorers + the group step + the visurf estimator: a rollout that only beats the GT
    through its thinking-format point does not 'match' the GT (docs/METHOD.md §3.2 with §3.3)."""
    from verl import DataProto

    from verl_ext.rewards import compute_score
    from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
    from verl_ext.visurf.group_step import apply_group_step
    from verl_ext.visurf.reward_control import align_gt

    source, label, wrong, extra = CASES[task]
    responses = [wrong] * 4 + [align_gt(label, task)]
    is_gt = np.array([False] * 4 + [True])
    results = [compute_score(source, r, label, dict(extra), is_gt=bool(g)) for r, g in zip(responses, is_gt)]
    rollout, gt = results[0], results[-1]
    assert rollout["accuracy"] < gt["accuracy"] and rollout["thinking_format"] == 1 and gt["thinking_format"] == 0
    assert rollout["score"] >= gt["score"]  # the literal max r_i >= r_gt would smooth the GT away

    def group_step(mode):
        rows = [compute_score(source, r, label, dict(extra), is_gt=bool(g), gt_thinking_reward=mode)
                for r, g in zip(responses, is_gt)]
        scores = torch.zeros(5, 3)
        scores[:, -1] = torch.tensor([r["score"] for r in rows])
        batch = DataProto.from_dict(
            tensors={"rm_scores": scores, "response_mask": torch.ones(5, 3, dtype=torch.long)},
            non_tensors={"uid": np.array(["u"] * 5, dtype=object), "is_gt": is_gt,
                         "thinking_format": np.array([r["thinking_format"] for r in rows])},
        )
        apply_group_step(batch, batch.non_tensor_batch["uid"], True, "always", mode)
        adv, _ = compute_visurf_outcome_advantage(batch.batch["rm_scores"], batch.batch["response_mask"],
                                                  batch.non_tensor_batch["uid"])
        return rows[-1]["score"], float(batch.batch["rm_scores"][-1].sum()), float(adv[-1, 0])

    raw, smoothed, _ = group_step("zero")
    assert smoothed == raw  # compared without the format point: no rollout matches the GT, no smoothing
    raw, smoothed, adv = group_step("full")  # the GT credited with the format point: strictly best
    assert smoothed == raw and adv > 1.0


def test_groups_without_a_gt_keep_g_sampled_rollouts():
    """Issue 12 item 4: a group whose GT is unusable keeps G sampled rollouts (as GRPO at equal
    sampling cost): its extra copy becomes a pad row, never sampled, in a group of its own."""
    from verl_ext.visurf.group_step import gt_copy_roles, own_groups

    G = 3
    uids = np.array(["a"] * (G + 1) + ["b"] * (G + 1) + ["c"] * (G + 1), dtype=object)
    reasons = np.array([""] * (G + 1) + ["no_label"] * (G + 1) + ["too_long"] * (G + 1), dtype=object)
    is_gt, is_pad, skipped = gt_copy_roles(uids, reasons)
    assert is_gt.tolist() == [False] * G + [True] + [False] * (2 * G + 2)
    assert is_pad.tolist() == [False] * (G + 1) + ([False] * G + [True]) * 2
    assert skipped.tolist() == [""] * (G + 1) + [""] * G + ["no_label"] + [""] * G + ["too_long"]
    sampled = ~is_gt & ~is_pad
    for g in "abc":
        assert sampled[uids == g].sum() == G
    moved = own_groups(uids, is_pad)
    assert len(set(moved[is_pad])) == 2 and not set(moved[is_pad]) & set(uids)


def test_manager_tokenizer_is_built_like_the_workers_one(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 12 item 8: an hdfs:// model path works as in verl's agent-loop workers (HFModelConfig:
    copy_to_local, here served from verl's local cache of that path), where hf_tokenizer(path) fails."""
    import shutil
    import tempfile

    from verl.utils import hf_tokenizer
    from verl.utils.fs import _record_directory_structure, get_local_temp_path

    from recipe.visurf.dry_run import compose_rl
    from verl_ext.visurf.gt_injection import worker_tokenizer

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    remote = "hdfs://cluster/models/tiny-qwen2.5-vl"
    cached = get_local_temp_path(remote, tempfile.gettempdir())
    shutil.copytree(tiny_model_dir, cached)
    _record_directory_structure(cached)  # what verl's copy_to_local leaves after a download

    model = compose_rl([f"actor_rollout_ref.model.path={remote}"]).actor_rollout_ref.model
    tok = worker_tokenizer(model)
    text = '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]</answer>'
    assert tok.encode(text, add_special_tokens=False) == \
        hf_tokenizer(str(tiny_model_dir)).encode(text, add_special_tokens=False)
    with pytest.raises(Exception):  # what the manager did before: the remote path straight to transformers
        hf_tokenizer(remote)
