"""ViSurf and GRPO through verl 0.9.1 with the tiny Qwen3-VL, end to end on CPU.

The same recipe command as tests/test_e2e_recipe.py, with ``actor_rollout_ref.model.path`` at a tiny
Qwen3-VL (``python -m verl_ext.tiny --family qwen3_vl``) and synthetic grounding data prepared for its
convention (``data_prep.synthetic.generate(..., coords="rel1000")``: the same 840-frame labels, the
0-1000 prompt, ``extra_info.coords``). Nothing is set for the convention: ``visurf.coords=auto`` finds
``rel1000`` in the actor's config. Checked: the GT row is the label in 0-1000 coordinates and scores full
accuracy under the rel1000 reward, shares prompt, images and 3-D positions with its group
(``visurf/gt_rows_checked``), the sampler agrees with verl's actor, and the ``visurf/*`` metrics are the
ones a Qwen2.5-VL run logs; GRPO trains 2 steps on the same data; ViSurf trains on text-only rows
(verl's GSM8K format) with the Qwen3-VL actor too; and ViSurf trains the tiny Qwen3.5 (``--family
qwen3_5``, Gated DeltaNet layers on transformers' torch fallback) through the same path.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from conftest import assert_ok, run_recipe
from test_e2e_text_only import write_gsm8k_parquet

from verl_ext.visurf.columns import OWN_GROUP_SUFFIX
from verl_ext.visurf.reward_control import align_gt

pytestmark = pytest.mark.e2e
PROMPTS, G = 4, 2
VISURF_KEYS = ("visurf/gt_reward_before_smoothing", "visurf/gt_reward_after_smoothing", "visurf/gt_advantage_mean",
               "visurf/gt_signal_share", "visurf/rollout_reward_mean", "visurf/gt_skipped_too_long",
               "visurf/rollout_entropy", "visurf/rollout_probs_diff_max", "visurf/rollout_probs_diff_mean",
               "visurf/gt_rows_checked", "visurf/gt_injected", "visurf/rollout_accuracy_mean")


@pytest.fixture(scope="module")
def rel_data(tmp_path_factory):
    from data_prep.synthetic import generate

    root = tmp_path_factory.mktemp("data-rel1000")
    generate("grounding", 16, 0, str(root / "train.parquet"), image_size=112, coords="rel1000")
    generate("grounding", 4, 1, str(root / "val.parquet"), image_size=112, split="val", coords="rel1000")
    return {"train": root / "train.parquet", "val": root / "val.parquet"}


@pytest.fixture(scope="module")
def visurf_run(tmp_path_factory, tiny_qwen3_vl_dir, rel_data):
    run = run_recipe(tmp_path_factory.mktemp("visurf-qwen3vl"), tiny_qwen3_vl_dir, rel_data)
    assert_ok(run)
    return run


def _groups(rows):
    groups = defaultdict(list)
    for row in rows:
        groups[row["uid"].removesuffix(OWN_GROUP_SUFFIX)].append(row)
    return groups


def test_visurf_on_qwen3_vl_detects_rel1000_and_injects_checked_gt_rows(visurf_run):
    assert "grounding coordinates rel1000 (visurf.coords=auto, detected from the actor's model_type 'qwen3_vl')" \
        in visurf_run.log
    for step in (1, 2):
        rows, m = visurf_run.rollouts[step], visurf_run.step(step)
        assert len(rows) == PROMPTS * (G + 1)
        groups = _groups(rows)
        assert len(groups) == PROMPTS and all(len(g) == G + 1 for g in groups.values())
        assert all(sum(not r["is_gt"] and not r["is_pad"] for r in g) == G for g in groups.values())
        assert m["visurf/gt_injected"] == PROMPTS
        # same prompt ids, images and Qwen3-VL 3-D rope positions as the group's rollouts
        assert m["visurf/gt_rows_checked"] == m["visurf/gt_injected"]
        for key in VISURF_KEYS:
            assert key in m, key
        assert math.isfinite(m["actor/pg_loss"]) and m["actor/grad_norm"] > 0
        assert m["visurf/rollout_probs_diff_max"] < 1e-3  # the hf server samples what verl's actor computes
        for group in groups.values():
            assert abs(sum(r["advantage"] for r in group)) < 1e-4
    print("\n[qwen3_vl visurf metrics] " + "; ".join(
        f"step {s}: " + ", ".join(f"{k}={visurf_run.step(s)[k]:.4g}" for k in sorted(visurf_run.step(s))
                                   if k.startswith("visurf/")) for s in (1, 2)))


def test_gt_rows_are_the_label_in_0_1000_and_score_full_accuracy(visurf_run, tiny_qwen3_vl_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen3_vl_dir)
    gt_rows = [r for s in (1, 2) for r in visurf_run.rollouts[s] if r["is_gt"]]
    assert gt_rows
    for row in gt_rows:
        text = align_gt(row["gts"], "grounding", coords="rel1000")
        assert row["response_ids"] == tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        assert align_gt(row["gts"], "grounding") != text or row["gts"] == "[]"  # not the 840-frame numbers
        assert row["accuracy"] == 3 and row["thinking_format"] == 0 and row["answer_format"] == 2


def test_every_row_was_scored_in_0_1000(visurf_run):
    """The reward workers read every response in rel1000 (``visurf.coords`` reached them): each dumped
    row's score is the recipe's scorer with ``coords="rel1000"``; the GT read as absolute 840-frame pixels
    loses accuracy (its numbers are 1000/840 of the label's, hand-checked in tests/test_coords.py)."""
    from data_prep.synthetic import DATA_SOURCE
    from verl_ext.rewards import compute_score

    source = DATA_SOURCE["grounding"]
    rows = [r for s in (1, 2) for r in visurf_run.rollouts[s] if not r["is_pad"]]
    for row in rows:
        extra = {"is_gt": row["is_gt"], "coords": "rel1000"}
        assert compute_score(source, row["output"], row["gts"], extra)["score"] == pytest.approx(row["score"])
    for row in (r for r in rows if r["is_gt"] and r["gts"] != "[]"):
        as_abs = compute_score(source, row["output"], row["gts"], {"is_gt": True, "coords": "abs840"})
        assert as_abs["accuracy"] < 3 == row["accuracy"]


def test_grpo_on_qwen3_vl_two_steps(tmp_path, tiny_qwen3_vl_dir, rel_data):
    from pathlib import Path

    from data_prep.synthetic import DATA_SOURCE
    from verl_ext.rewards import compute_score

    # a random model scores the same on every rollout; the test reward (the recipe's task score, read in
    # the run's convention from extra_info["coords"], + a length term) makes the groups vary
    reward = Path(__file__).parent / "assets" / "varying_reward.py"
    run = run_recipe(tmp_path, tiny_qwen3_vl_dir, rel_data, "visurf.enable=False",
                     f"reward.custom_reward_function.path={reward}")
    assert_ok(run)
    assert "grounding coordinates rel1000" in run.log
    for step in (1, 2):
        rows, m = run.rollouts[step], run.step(step)
        assert len(rows) == PROMPTS * G and not any(r["is_gt"] for r in rows)
        for row in rows:  # the dumped score is that reward on the decoded response (no boxes to tell conventions apart)
            task = compute_score(DATA_SOURCE["grounding"], row["output"], row["gts"], {"coords": "rel1000"})
            assert row["score"] == pytest.approx(task["score"] + (len(row["output"]) % 7) / 7.0)
        assert m["actor/grad_norm"] > 0 and math.isfinite(m["actor/pg_loss"])
        assert not any(k.startswith("visurf/gt_") for k in m)
    assert run.step(2)["training/rollout_actor_probs_pearson_corr"] > 0.95


def test_visurf_on_qwen3_vl_text_only_rows(tmp_path, tiny_qwen3_vl_dir):
    data = {"train": tmp_path / "train.parquet", "val": tmp_path / "test.parquet"}
    write_gsm8k_parquet(data["train"], 8, "train")
    write_gsm8k_parquet(data["val"], 4, "test")
    run = run_recipe(tmp_path / "run", tiny_qwen3_vl_dir, data, "visurf.gt_template='#### {answer}'")
    assert_ok(run)
    for step in (1, 2):
        rows, m = run.rollouts[step], run.step(step)
        assert len(rows) == PROMPTS * (G + 1) and m["visurf/gt_injected"] == PROMPTS
        assert m["visurf/gt_rows_checked"] == PROMPTS
        assert all(r["score"] == 1.0 for r in rows if r["is_gt"])  # verl's GSM8K scorer on '#### N'
        assert math.isfinite(m["actor/pg_loss"])


def test_visurf_on_qwen3_5_through_the_same_path(tmp_path, tiny_qwen3_5_dir, rel_data):
    run = run_recipe(tmp_path, tiny_qwen3_5_dir, rel_data)
    assert_ok(run)
    assert "grounding coordinates rel1000 (visurf.coords=auto, detected from the actor's model_type 'qwen3_5')" \
        in run.log
    for step in (1, 2):
        rows, m = run.rollouts[step], run.step(step)
        assert len(rows) == PROMPTS * (G + 1) and m["visurf/gt_injected"] == PROMPTS
        assert m["visurf/gt_rows_checked"] == PROMPTS
        assert m["visurf/rollout_probs_diff_max"] < 1e-3
        assert math.isfinite(m["actor/pg_loss"]) and m["actor/grad_norm"] > 0
        for key in VISURF_KEYS:
            assert key in m, key
        assert all(r["accuracy"] == 3 for r in rows if r["is_gt"])  # the 0-1000 GT, read in 0-1000
