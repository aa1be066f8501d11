"""The GT styles through the real recipe on CPU (verl 0.9.1's trainer, ray, the tiny Qwen2.5-VL):
``visurf.gt_style=rollout_think`` with ``visurf.gt_loss_tokens=answer``, 2 steps and a validation.

The tiny random model never writes a think block, so every group falls back to ``template``: the
test reads verl's rollout dump and checks the new metrics against the rows themselves (fallbacks =
GT rows whose group has no rollout with a well-formed think block; trained GT tokens = the GT rows'
``response_mask``; answer-only loss = the leading ``<``, ``answer`` tokens masked), no GT row skipped,
every GT row checked against its group, and a validation batch without GT rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_ok, run_recipe

from verl_ext.visurf.columns import OWN_GROUP_SUFFIX
from verl_ext.visurf.gt_styles import decode
from verl_ext.visurf.gt_styles.rollout_think import think_block_end
from verl_ext.visurf.reward_control import align_gt

pytestmark = pytest.mark.e2e
PROMPTS = 4


def test_rollout_think_answer_tokens_two_steps(tmp_path, tiny_model_dir, grounding_data):
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    run = run_recipe(tmp_path, tiny_model_dir, grounding_data, "visurf.gt_style=rollout_think",
                     "visurf.gt_loss_tokens=answer", "trainer.test_freq=2")
    assert_ok(run)
    for step in (1, 2):
        m, rows = run.step(step), run.rollouts[step]
        assert m["visurf/gt_injected"] == PROMPTS  # no GT row skipped
        assert m["visurf/gt_skipped_too_long"] == m["visurf/gt_skipped_no_label"] == m["visurf/gt_skipped_bad_label"] == 0
        assert m["visurf/gt_rows_checked"] == PROMPTS
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r["uid"].removesuffix(OWN_GROUP_SUFFIX), []).append(r)
        thinking = [any(think_block_end(decode(tok, r["response_ids"])) >= 0 for r in g if not r["is_gt"])
                    for g in groups.values()]
        assert m["visurf/gt_think_fallback"] == thinking.count(False)
        assert m["visurf/gt_borrowed_share"] == thinking.count(True) / PROMPTS
        gt_rows = [r for r in rows if r["is_gt"]]
        assert m["visurf/gt_trained_tokens_mean"] == pytest.approx(
            sum(sum(r["response_mask"]) for r in gt_rows) / len(gt_rows))
        for r in gt_rows:  # fallback rows: the template GT, "<", "answer" not trained (">[" carries the label)
            assert r["response_ids"] == tok.encode(align_gt(r["gts"], "grounding"), add_special_tokens=False) + [
                tok.eos_token_id]
            assert r["response_mask"][:2] == [0, 0] and all(r["response_mask"][2:])
    assert len(run.validation[2]) == len(pd.read_parquet(grounding_data["val"]))  # n=1, no GT member
    assert not any(r.get("is_gt") for r in run.validation[2])


def test_manager_rescores_rewritten_gt_rows_with_verls_reward_worker(tiny_model_dir, grounding_data):
    """The manager's rescoring of GT rows whose tokens the style changed, through verl's own
    ``RewardLoopWorker`` ray actor (the recipe's reward manager and scorers inside): the GT row gets
    the score of its new text (``<think>..</think>`` borrowed + the aligned GT, ``is_gt``) at its last
    response token, and its reward_extra_info columns are that score's components."""
    import pandas as pd
    import ray
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.utils.model import compute_position_id_with_mask

    from recipe.visurf.dry_run import compose_rl
    from recipe.visurf.main_visurf import prepare_config
    from verl_ext.rewards import compute_score
    from verl_ext.visurf import columns as C
    from verl_ext.visurf.gt_injection import VisurfAgentLoopManager

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = prepare_config(compose_rl([
        f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files={grounding_data['train']}",
        f"data.val_files={grounding_data['val']}", "actor_rollout_ref.rollout.n=2", "data.max_response_length=160",
        "data.train_batch_size=1", "actor_rollout_ref.rollout.agent.num_workers=1", "reward.num_workers=1",
        "visurf.gt_style=rollout_think"]))
    row = pd.read_parquet(grounding_data["train"]).iloc[0]
    label, source = row["reward_model"]["ground_truth"], row["data_source"]
    gt_text = align_gt(label, "grounding")
    texts = ["<answer>[]</answer>", "<think>the red circle</think><answer>[]</answer>", gt_text]
    P, R = 3, 160
    responses = torch.zeros(3, R, dtype=torch.long)
    attn = torch.zeros(3, P + R, dtype=torch.long)
    attn[:, :P] = 1
    for i, text in enumerate(texts):
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        responses[i, : len(ids)] = torch.tensor(ids)
        attn[i, P: P + len(ids)] = 1
    prompts_ids = torch.tensor([[5, 6, 7]] * 3)
    rm = torch.zeros(3, R)
    rm[2, 0] = -1.0  # a stale score the rescoring must replace
    uid = np.array(["u"] * 3, dtype=object)
    is_gt = np.array([False, False, True])
    nt = {"uid": uid, C.IS_GT: is_gt, C.GT_TEXT: np.array(["", "", gt_text], dtype=object),
          "data_source": np.array([source] * 3, dtype=object),
          "reward_model": np.array([dict(row["reward_model"])] * 3, dtype=object),
          "extra_info": np.array([dict(row["extra_info"])] * 3, dtype=object)}
    out = DataProto.from_dict(
        tensors={"prompts": prompts_ids, "responses": responses, "response_mask": attn[:, P:].clone(),
                 "input_ids": torch.cat([prompts_ids, responses], 1), "attention_mask": attn,
                 "position_ids": compute_position_id_with_mask(attn), "rm_scores": rm},
        non_tensors={"thinking_format": np.array([0.0, 1.0, 9.0]), "accuracy": np.array([0.0, 0.0, 9.0]),
                     "invalid_reason": np.array(["", "", "x"])},
        meta_info={"reward_extra_keys": ["thinking_format", "accuracy", "invalid_reason"]})
    prompts = DataProto.from_dict(tensors={"input_ids": prompts_ids}, non_tensors=nt)
    out.non_tensor_batch[C.IS_GT] = is_gt

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}})
    try:
        manager = VisurfAgentLoopManager.__new__(VisurfAgentLoopManager)  # the hooks only, no agent-loop workers
        manager.config = config
        manager.reward_loop_worker_handles = [ray.remote(RewardLoopWorker).remote(config, None)]
        manager._visurf_setup()
        manager._build_gt_rows(out, prompts)
    finally:
        ray.shutdown()
    new_text = "<think>the red circle</think><answer>" + gt_text.removeprefix("<answer>")
    n = int(attn[2, P:].sum())
    assert tok.decode(out.batch["responses"][2, :n].tolist(), skip_special_tokens=True) == new_text
    expected = compute_score(source, new_text, label, is_gt=True, gt_thinking_reward="zero")
    assert out.batch["rm_scores"][2].tolist() == [0.0] * (n - 1) + [expected["score"]] + [0.0] * (R - n)
    assert out.non_tensor_batch["thinking_format"][2] == 0.0  # §3.2: the GT earns no thinking point
    assert out.non_tensor_batch["accuracy"][2] == expected["accuracy"] == 3.0
    assert out.non_tensor_batch["invalid_reason"][2] == expected["invalid_reason"]
    assert out.batch["rm_scores"][:2].sum().item() == 0.0  # rollout rows untouched
