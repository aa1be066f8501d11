"""The GT styles through the real recipe on CPU (verl 0.9.1's trainer, ray, the tiny Qwen2.5-VL):
``visurf.gt_style=rollout_think`` with ``visurf.gt_loss_tokens=answer``, 2 steps and a validation.

The tiny random model never writes a think block, so every group falls back to ``template``: the
test reads verl's rollout dump and checks the new metrics against the rows themselves (fallbacks =
GT rows whose group has no rollout with a well-formed think block; trained GT tokens = the GT rows'
``response_mask``; answer-only loss = the leading ``<``, ``answer`` tokens masked), no GT row skipped,
every GT row checked against its group, and a validation batch without GT rows.
"""

from __future__ import annotations

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
