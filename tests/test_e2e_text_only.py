"""ViSurf on verl's own text dataset format, end to end on CPU (issue 13 item 3).

The test writes a text-only parquet exactly as verl's ``examples/data_preprocess/gsm8k.py`` does
(``data_source: openai/gsm8k``, one user message ending in the ``####`` instruction, no image
column, ``reward_model.ground_truth`` = the number, ``extra_info`` with split/index/answer/question),
and trains 2 ViSurf steps with the tiny model, the recipe's default reward path (the project's
dispatcher, which hands ``openai/gsm8k`` to verl's ``default_compute_score``) and
``visurf.gt_template='#### {answer}'`` — the overrides the README gives a GSM8K user.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pytest
from conftest import assert_ok, run_recipe

from verl.utils.reward_score import gsm8k as verl_gsm8k

pytestmark = pytest.mark.e2e
PROMPTS, G = 4, 2
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'  # verl's gsm8k.py


def write_gsm8k_parquet(path, n: int, split: str) -> None:
    """Rows in the schema of verl's GSM8K preprocessing (examples/data_preprocess/gsm8k.py)."""
    rows = []
    for idx in range(n):
        a, b = 3 + idx, 10 + 2 * idx
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        answer = str(a + b)
        rows.append({
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": question + " " + INSTRUCTION}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": idx, "answer": f"{a} + {b} = {answer}\n#### {answer}",
                           "question": question},
        })
    pd.DataFrame(rows).to_parquet(path)


@pytest.fixture(scope="module")
def gsm8k_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("gsm8k")
    data = {"train": root / "train.parquet", "val": root / "test.parquet"}
    write_gsm8k_parquet(data["train"], 8, "train")
    write_gsm8k_parquet(data["val"], 4, "test")
    run = run_recipe(root / "run", tiny_model_dir, data, "visurf.gt_template='#### {answer}'")
    assert_ok(run)
    return run


def test_text_only_gsm8k_every_group_has_its_gt_row(gsm8k_run):
    for step in (1, 2):
        rows = gsm8k_run.rollouts[step]
        groups = defaultdict(list)
        for row in rows:
            groups[row["uid"]].append(row)
        assert len(groups) == PROMPTS and all(len(g) == G + 1 for g in groups.values())
        assert all(sum(r["is_gt"] for r in g) == 1 for g in groups.values())
        m = gsm8k_run.step(step)
        assert m["visurf/gt_injected"] == PROMPTS
        assert m["visurf/gt_rows_checked"] == PROMPTS  # same prompt ids and positions as the rollouts
        for reason in ("too_long", "no_label", "bad_label"):
            assert m[f"visurf/gt_skipped_{reason}"] == 0


def test_text_only_gsm8k_gt_reward_is_verls_full_score(gsm8k_run):
    full = verl_gsm8k.compute_score("#### 13", "13")  # verl's own scorer: the correct answer's score
    assert full == 1.0
    for step in (1, 2):
        gt_rows = [r for r in gsm8k_run.rollouts[step] if r["is_gt"]]
        assert len(gt_rows) == PROMPTS
        for row in gt_rows:
            assert row["output"].strip() == f"#### {row['gts']}"
            assert verl_gsm8k.compute_score(row["output"], row["gts"]) == full
        assert gsm8k_run.step(step)["visurf/gt_reward_before_smoothing"] == full
