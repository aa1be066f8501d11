"""GT labels: the renderer and the scorer agree on what a valid label is (issue 12 item 1), any
data_source gets its GT and its reward (issue 13): generic rendering with ``visurf.gt_template``,
verl's ``default_compute_score`` as the fallback, ``is_gt`` in ``extra_info`` for foreign reward
functions, text-only GT rows, and the start-up check of every data source of a run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from verl import DataProto
from verl.utils.reward_score import gsm8k as verl_gsm8k
from verl.utils.reward_score import math_reward as verl_math
from verl_ext.rewards import compute_score
from verl_ext.rewards.parsing import parse_label
from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.gt_injection import (
    VisurfAgentLoopManager,
    check_gt_rows,
    gt_response_texts,
    sources_without_gt,
)
from verl_ext.visurf.reward_control import align_gt, render_gt
from verl_ext.visurf.source_check import check_data_sources, sample_rows

OBJ = {"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}
ALIGNED = '<answer>[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}]</answer>'


def _np_objects(objs):
    """What pandas / pyarrow give for a list-of-struct column: an object array of dicts of arrays."""
    return np.array([{k: np.asarray(v) for k, v in o.items()} for o in objs], dtype=object)


# ------------------------------------------------------------------------------------------
# issue 12 item 1: every label form the scorer accepts gives a GT row, and it scores in full
# ------------------------------------------------------------------------------------------
LABEL_FORMS = {
    "json string": json.dumps([OBJ]),
    "list of dicts (HF datasets)": [dict(OBJ)],
    "numpy array of dicts (pandas / pyarrow)": _np_objects([OBJ]),
    "dict (struct column)": dict(OBJ),
    "float coordinates": [{"bbox_2d": [10.0, 100.0, 200.0, 210.0], "point_2d": [30.0, 110.0]}],
}


@pytest.mark.parametrize("form", LABEL_FORMS)
def test_every_label_form_gives_a_gt_row_that_the_scorer_scores_in_full(form):
    label = LABEL_FORMS[form]
    texts, reasons = gt_response_texts([label] * 3, ["refcocog"] * 3, VisurfConfig())
    assert reasons == ["", "", ""] and texts == [ALIGNED] * 3
    # the scorer reads the same label: the GT earns answer format 2 + accuracy 3 + non-repeat 1
    result = compute_score("refcocog", texts[0], label, {"is_gt": True})
    assert (result["answer_format"], result["accuracy"], result["score"]) == (2.0, 3.0, 6.0)


def test_gui_label_forms_render_the_element_point():
    label = _np_objects([{"bbox_2d": [10, 100, 200, 210], "point_2d": [105, 155]}])
    texts, reasons = gt_response_texts([label], ["omniact"], VisurfConfig())
    assert texts == ['<answer>[{"point_2d": [105, 155]}]</answer>'] and reasons == [""]
    assert compute_score("omniact", texts[0], label)["accuracy"] == 1.0


@pytest.mark.parametrize("label", ["3", " 3\n", 3, np.int64(3)])
def test_math_label_forms(label):
    texts, reasons = gt_response_texts([label], ["geo3k"], VisurfConfig())
    assert texts == ["<answer>3</answer>"] and reasons == [""]
    assert compute_score("geo3k", texts[0], label, {"is_gt": True})["accuracy"] == 1.0


def test_out_of_frame_and_swapped_boxes_are_normalised_once_for_renderer_and_scorer():
    # x past the frame (900 -> 840), swapped corners (x1 > x2, y1 > y2), a negative coordinate (-4 -> 0)
    label = json.dumps([{"bbox_2d": [900, 40, 3, -4], "point_2d": [5, 6]}])
    parsed = parse_label(label)
    assert parsed.boxes.tolist() == [[3.0, 0.0, 840.0, 40.0]]  # the scorer's reading
    gt = align_gt(label, "grounding")
    assert gt == '<answer>[{"bbox_2d": [3, 0, 840, 40], "point_2d": [5, 6]}]</answer>'  # the same reading
    result = compute_score("refcocog", gt, label, {"is_gt": True})
    assert result["accuracy"] == 3.0 and result["score"] == 6.0


@pytest.mark.parametrize("label, task", [
    ('[{"bbox_2d": [1, 2, 3], "point_2d": [1, 2]}]', "grounding"),
    ('[{"bbox_2d": [1, 2, 3, 4]}]', "lesion"),
    ('[{"bbox_2d": [1, 2, 3, true], "point_2d": [1, 2]}]', "anomaly"),
    ("[{bbox_2d: 1}]", "grounding"),
    ('{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2]', "grounding"),
    ("7", "grounding"),
    (json.dumps([OBJ, OBJ]), "gui"),
])
def test_a_label_the_scorer_rejects_is_rejected_by_the_renderer_with_the_same_message(label, task):
    source = {"grounding": "refcocog", "lesion": "isic2018", "anomaly": "realiad", "gui": "omniact"}[task]
    with pytest.raises(ValueError) as scorer:
        compute_score(source, ALIGNED, label)
    with pytest.raises(ValueError) as renderer:
        align_gt(label, task)
    assert str(scorer.value) in str(renderer.value)
    assert str(renderer.value).startswith(f"bad {task} label {label!r}: ")
    texts, reasons = gt_response_texts([label], [source], VisurfConfig())
    assert reasons == ["bad_label"] and texts == [""]


def test_missing_labels_are_no_label():
    texts, reasons = gt_response_texts([None, " ", float("nan"), "[]"], ["refcocog"] * 4, VisurfConfig())
    assert reasons == ["no_label", "no_label", "no_label", ""] and texts[3] == "<answer>[]</answer>"


# ------------------------------------------------------------------------------------------
# issue 13 item 1: unknown data sources: generic rendering, verl's reward, never a silent bad_label
# ------------------------------------------------------------------------------------------
def test_generic_rendering_puts_the_label_into_gt_template():
    assert render_gt("72", "openai/gsm8k", template="#### {answer}") == "#### 72"
    assert render_gt(72, "openai/gsm8k", template="#### {answer}") == "#### 72"
    assert render_gt(np.float64(0.5), "my_qa") == "<answer>0.5</answer>"
    assert render_gt(["a", "b"], "my_qa") == '<answer>["a", "b"]</answer>'
    assert render_gt({"target": ["Paris"]}, "my_qa", template="{answer}") == '{"target": ["Paris"]}'
    assert render_gt("\\frac{1}{2}", "lighteval/MATH", template="\\boxed{{answer}}") == "\\boxed{\\frac{1}{2}}"
    with pytest.raises(ValueError, match="bad data_source='my_qa' label"):
        render_gt(object(), "my_qa")


def test_gt_rows_of_verl_sources_render_and_score_in_full_with_verls_own_scorers():
    texts, reasons = gt_response_texts(["72", "72"], ["openai/gsm8k"] * 2, VisurfConfig(gt_template="#### {answer}"))
    assert texts == ["#### 72", "#### 72"] and reasons == ["", ""]
    assert verl_gsm8k.compute_score(texts[0], "72") == 1.0
    assert compute_score("openai/gsm8k", texts[0], "72") == 1.0  # the recipe's reward falls back to verl's
    math = VisurfConfig(gt_template="\\boxed{{answer}}")
    (math_gt,), _ = gt_response_texts(["\\frac{1}{2}"], ["lighteval/MATH"], math)
    assert verl_math.compute_score(math_gt, "\\frac{1}{2}") == 1.0
    assert compute_score("lighteval/MATH", math_gt, "\\frac{1}{2}") == 1.0


def test_a_source_nobody_scores_names_the_source_and_both_fixes():
    with pytest.raises(ValueError) as err:
        compute_score("my_qa", "#### 1", "1")
    text = str(err.value)
    assert "'my_qa'" in text and "reward.custom_reward_function.path=" in text
    assert "write the rows with a data_source verl or this recipe scores" in text


def test_sources_without_gt_are_those_whose_every_row_is_a_bad_label():
    sources = ["a", "a", "b", "b", "c", "d"]
    reasons = ["bad_label", "bad_label", "bad_label", "", "no_label", "too_long"]
    assert sources_without_gt(sources, reasons) == ["a"]
    assert sources_without_gt(sources, [""] * 6) == []


def test_the_manager_fails_at_the_first_batch_naming_a_source_without_gt():
    manager = object.__new__(VisurfAgentLoopManager)  # the real class; no workers needed for this step
    manager.visurf = VisurfConfig()
    labels = ["[{'bbox_2d': [1, 2, 3, 4], 'point_2d': [1, 2]}]"] * 2 + ["3"]  # a Python repr is not JSON
    sources = ["refcocog", "refcocog", "geo3k"]
    texts, reasons = gt_response_texts(labels, sources, manager.visurf)
    with pytest.raises(ValueError, match=r"no row of data_source 'refcocog' gets its GT member.*not valid JSON"):
        manager._fail_on_sources_without_gt(sources, labels, reasons)
    # a later batch in which one row of a source already seen has a bad label is a per-row skip
    manager._fail_on_sources_without_gt(sources[:1], labels[:1], reasons[:1])


# ------------------------------------------------------------------------------------------
# issue 13 item 2: is_gt and gt_thinking_reward reach a foreign reward function
# ------------------------------------------------------------------------------------------
def test_a_foreign_reward_function_receives_is_gt_and_gt_thinking_reward():
    from verl_ext.reward_manager import score_row

    seen = []

    def users_reward(data_source, solution_str, ground_truth, extra_info=None):  # verl's signature
        seen.append(extra_info)
        return 0.5 if extra_info.get("is_gt") else 1.0

    row = {"index": 7, "question": "q"}
    gt = score_row(users_reward, "my_qa", "A", "A", row, is_gt=True, gt_thinking_reward="full")
    rollout = score_row(users_reward, "my_qa", "A", "A", row, is_gt=False, gt_thinking_reward="zero")
    assert (gt, rollout) == ({"score": 0.5}, {"score": 1.0})
    assert seen == [{"index": 7, "question": "q", "is_gt": True, "gt_thinking_reward": "full"},
                    {"index": 7, "question": "q", "is_gt": False, "gt_thinking_reward": "zero"}]
    assert row == {"index": 7, "question": "q"}  # the row's own extra_info is not modified


# ------------------------------------------------------------------------------------------
# issue 13 item 3: text-only GT rows (no images, 1-D positions) pass the GT row check
# ------------------------------------------------------------------------------------------
def _text_batch(gt_prompt_shift: int = 0) -> DataProto:
    prompt_len, resp_len = 5, 4
    prompts = torch.tensor([[0, 0, 11, 12, 13]] * 3)
    prompts[2, -1] += gt_prompt_shift
    attn_prompt = (prompts != 0).long()
    resp_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    attention = torch.cat([attn_prompt, resp_mask], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp_min(0)  # 1-D positions [bs, L], as verl builds them
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": torch.ones(3, resp_len, dtype=torch.long),
                 "attention_mask": attention, "position_ids": positions, "response_mask": resp_mask,
                 "input_ids": torch.cat([prompts, torch.ones(3, resp_len, dtype=torch.long)], dim=1)},
        non_tensors={"uid": np.array(["q", "q", "q"], dtype=object), "is_gt": np.array([False, False, True])},
    )


def test_check_gt_rows_on_text_only_rows_with_1d_positions():
    batch = _text_batch()
    assert batch.batch["position_ids"].dim() == 2 and "multi_modal_inputs" not in batch.non_tensor_batch
    assert check_gt_rows(batch) == 1
    with pytest.raises(RuntimeError, match="prompt ids"):
        check_gt_rows(_text_batch(gt_prompt_shift=1))


# ------------------------------------------------------------------------------------------
# start-up check of the run's data sources (issue 13 item 1)
# ------------------------------------------------------------------------------------------
def _parquet(path, source, labels, label_type=None):
    rm_type = pa.struct([("style", pa.string()), ("ground_truth", label_type or pa.string())])
    table = pa.table({
        "data_source": pa.array([source] * len(labels)),
        "prompt": pa.array([[{"role": "user", "content": f"q{i}"}] for i in range(len(labels))]),
        "reward_model": pa.array([{"style": "rule", "ground_truth": g} for g in labels], type=rm_type),
        "extra_info": pa.array([{"index": i} for i in range(len(labels))]),
    })
    pq.write_table(table, path)
    return str(path)


def _config(train, **visurf):
    return OmegaConf.create({
        "data": {"train_files": train, "val_files": [], "reward_fn_key": "data_source"},
        "reward": {"custom_reward_function": {"path": "pkg://verl_ext.rewards", "name": "compute_score",
                                              "reward_kwargs": {}}},
        "visurf": {"enable": True, "align": True, "gt_template": "<answer>{answer}</answer>",
                   "gt_thinking_reward": "zero", **visurf},
    })


def test_startup_check_reads_list_of_struct_labels_like_verls_dataset(tmp_path):
    obj_type = pa.list_(pa.struct([("bbox_2d", pa.list_(pa.int64())), ("point_2d", pa.list_(pa.int64()))]))
    path = _parquet(tmp_path / "g.parquet", "refcocog", [[OBJ]] * 3, obj_type)
    samples, skipped = sample_rows([path, "hdfs://x/train.parquet"], "data_source", per_source=2)
    assert skipped == ["hdfs://x/train.parquet (remote path, not read at start-up)"]
    assert samples["refcocog"] == [{"ground_truth": [OBJ], "extra_info": {"index": 0}},
                                   {"ground_truth": [OBJ], "extra_info": {"index": 1}}]
    assert check_data_sources(_config(path)) == {"refcocog": "the recipe's grounding scorer"}


def test_startup_check_rejects_a_source_without_reward_naming_both_fixes(tmp_path):
    path = _parquet(tmp_path / "qa.parquet", "my_qa", ["Paris"])
    with pytest.raises(ValueError, match=r"unknown data_source 'my_qa'.*reward.custom_reward_function.path=.*"
                                         r"write the rows with a data_source"):
        check_data_sources(_config(path))


def test_startup_check_uses_the_users_reward_function(tmp_path):
    reward = tmp_path / "my_reward.py"
    reward.write_text("def score(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    return float(solution_str.strip() == 'A: ' + ground_truth)\n")
    path = _parquet(tmp_path / "qa.parquet", "my_qa", ["Paris"])
    config = _config(path, gt_template="A: {answer}")
    config.reward.custom_reward_function = {"path": str(reward), "name": "score", "reward_kwargs": {}}
    assert check_data_sources(config) == {"my_qa": f"reward.custom_reward_function {reward}:score"}


def test_startup_check_rejects_a_template_the_reward_gives_nothing(tmp_path):
    path = _parquet(tmp_path / "gsm8k.parquet", "openai/gsm8k", ["72"])
    with pytest.raises(ValueError, match=r"'openai/gsm8k' renders as '<answer>72</answer>'.*scores 0 under verl's "
                                         r"default_compute_score.*'#### \{answer\}'"):
        check_data_sources(_config(path))
    assert check_data_sources(_config(path, gt_template="#### {answer}")) == {
        "openai/gsm8k": "verl's default_compute_score"}
    # GRPO (visurf.enable=False) needs a reward, not a GT
    assert check_data_sources(_config(path, enable=False)) == {"openai/gsm8k": "verl's default_compute_score"}


def test_startup_check_rejects_a_source_whose_labels_never_render(tmp_path):
    path = _parquet(tmp_path / "bad.parquet", "refcocog", ["[{'bbox_2d': [1, 2, 3, 4]}]"] * 3)
    with pytest.raises(ValueError, match="data_source 'refcocog' gets no GT member: bad grounding label"):
        check_data_sources(_config(path))


def test_the_recipe_start_up_rejects_a_source_without_reward(tmp_path, monkeypatch):
    from recipe.visurf.dry_run import compose_rl
    from recipe.visurf.main_visurf import prepare_config

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    path = _parquet(tmp_path / "qa.parquet", "my_qa", ["Paris"])
    with pytest.raises(ValueError, match="unknown data_source 'my_qa': no reward function scores it"):
        prepare_config(compose_rl([f"data.train_files={path}", f"data.val_files={path}"]))
    gsm8k = _parquet(tmp_path / "gsm8k.parquet", "openai/gsm8k", ["72"])
    config = prepare_config(compose_rl([f"data.train_files={gsm8k}", f"data.val_files={gsm8k}",
                                        "visurf.gt_template='#### {answer}'"]))
    assert config.visurf.gt_template == "#### {answer}"


def _readme_commands(section: str) -> list[list[str]]:
    """The ``python -m recipe.visurf.main_visurf`` commands of a README section, as shell words."""
    import os
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        words = shlex.split(os.path.expandvars(block.replace("\\\n", " ")))
        if "recipe.visurf.main_visurf" in words:
            commands.append(words[words.index("recipe.visurf.main_visurf") + 1:])
    return commands


def test_readme_commands_for_an_existing_verl_run_parse_and_prepare(monkeypatch):
    from recipe.visurf.dry_run import compose_rl
    from recipe.visurf.main_visurf import prepare_config

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    commands = _readme_commands("ViSurf in your existing verl run")
    templates = []
    for overrides in commands:
        config = prepare_config(compose_rl(overrides))  # Hydra parses the pasted overrides; start-up checks pass
        assert config.algorithm.adv_estimator == "visurf"
        templates.append(config.visurf.gt_template)
    assert templates == ["#### {answer}", "\\boxed{{answer}}", "Answer: {answer}"]
    assert render_gt("72", "openai/gsm8k", template=templates[0]) == "#### 72"
    assert render_gt("30", "hiyouga/geometry3k", template=templates[1]) == "\\boxed{30}"


def test_startup_check_rejects_a_split_mixing_recipe_and_verl_sources(tmp_path):
    ours = _parquet(tmp_path / "math.parquet", "geo3k", ["3"])
    gsm8k = _parquet(tmp_path / "gsm8k.parquet", "openai/gsm8k", ["72"])
    config = _config([ours, gsm8k], gt_template="#### {answer}")
    with pytest.raises(ValueError, match=r"data.train_files mixes data sources the recipe scores \(geo3k\) with "
                                         r"sources verl's default_compute_score scores \(openai/gsm8k\)"):
        check_data_sources(config)
