"""The grounding coordinate convention: one setting (``verl_ext.coords``), used by the
prompts, the GT renderer, the grounding / gui / anomaly rewards, the start-up checks and data_prep.

Hand-computed: a label box [84, 168, 420, 840] in the 840 frame is [100, 200, 500, 1000] in Qwen3-VL's
relative 0-1000 coordinates (x * 1000 / 840), its point [252, 504] is [300, 600].
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from verl_ext import coords as C
from verl_ext.constants import TASK_PROMPT, build_prompt
from verl_ext.rewards import compute_score
from verl_ext.rewards import grounding, gui
from verl_ext.visurf.reward_control import align_gt, render_gt

LABEL = json.dumps([{"bbox_2d": [84, 168, 420, 840], "point_2d": [252, 504]}])
REL_ANSWER = '<think>the box.</think><answer>[{"bbox_2d": [100, 200, 500, 1000], "point_2d": [300, 600]}]</answer>'
ABS_ANSWER = '<think>the box.</think><answer>[{"bbox_2d": [84, 168, 420, 840], "point_2d": [252, 504]}]</answer>'


# ----------------------------------------------------------------------------- the conversions
def test_frame_scale_and_conversions_are_hand_computed():
    assert C.frame_scale("abs840") == 1.0
    assert C.frame_scale("rel1000") == pytest.approx(0.84)
    assert C.to_frame(1000, "rel1000") == pytest.approx(840)
    assert C.from_frame(420, "rel1000") == pytest.approx(500)
    assert C.to_frame(123.5, "abs840") == 123.5
    with pytest.raises(ValueError, match="must be one of"):
        C.frame_scale("rel100")


def test_family_table_and_detection_from_config_json(tmp_path):
    assert C.coords_of_model_type("qwen2_5_vl") == "abs840"
    for mt in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen2_vl"):
        assert C.coords_of_model_type(mt) == "rel1000"
    assert C.coords_of_model_type("llava") is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    assert C.model_coords(tmp_path) == "rel1000"
    assert C.resolve_coords("auto", tmp_path)[0] == "rel1000"
    assert C.resolve_coords("abs840", tmp_path)[0] == "abs840"  # an explicit setting overrides (warned)
    assert C.resolve_coords("auto", tmp_path / "missing")[0] == "abs840"  # unknown: the paper's default
    with pytest.raises(ValueError, match="visurf.coords"):
        C.resolve_coords("pixels", tmp_path)


def test_tiny_qwen25vl_is_detected_as_abs840(tiny_model_dir):
    assert C.model_coords(tiny_model_dir) == "abs840"


# ----------------------------------------------------------------------------- rewards
def test_a_perfect_rel1000_answer_scores_the_max_and_the_same_numbers_as_abs840_do_not():
    rel = grounding.compute_score(REL_ANSWER, LABEL, coords="rel1000")
    assert rel["score"] == grounding.MAX_SCORE == 7.0 and rel["accuracy"] == 3.0
    # the same numbers read as absolute 840-frame pixels: box [100, 200, 500, 840 (clipped)] vs [84, 168, 420, 840]:
    # IoU = (321*641) / (401*641 + 337*673 - 321*641) = 0.66 > 0.5 (+1), corner L1 = (16+32+80+0)/4 = 32 >= 10 (0),
    # point (300, 600) vs (252, 504): distance 107 >= 30 (0) -> accuracy 1
    read_abs = grounding.compute_score(REL_ANSWER, LABEL, coords="abs840")
    assert read_abs["accuracy"] == 1.0 and read_abs["score"] == 5.0
    # and the paper's convention is unchanged: the absolute answer is perfect under abs840 (the default)
    assert grounding.compute_score(ABS_ANSWER, LABEL)["score"] == 7.0
    # the absolute numbers read as rel1000 land at 0.84x: box [70.56, 141.12, 352.8, 705.6]: IoU =
    # (269.8*538.6) / (283.24*565.48 + 337*673 - 269.8*538.6) = 0.60 (+1), corner L1 60 px, point 90 px away
    wrong = grounding.compute_score(ABS_ANSWER, LABEL, coords="rel1000")
    assert wrong["accuracy"] == 1.0 and wrong["score"] == 5.0


def test_thresholds_stay_in_frame_pixels_under_rel1000():
    """A corner error of 11 rel units = 9.24 px (< BOX_L1_MATCH = 10 px) still earns the L1 term; 12 units =
    10.08 px does not (mean over the 4 corners: one corner off by 4x)."""
    def score(dx):
        ans = f'<answer>[{{"bbox_2d": [{100 + 4 * dx}, 200, 500, 1000], "point_2d": [300, 600]}}]</answer>'
        return grounding.compute_score(ans, LABEL, coords="rel1000")["accuracy"]

    assert score(11) == 3.0
    assert score(12) == 2.0


def test_non_object_rule_is_convention_free():
    for coords in C.COORDS:
        assert grounding.compute_score("<think>x</think><answer>[]</answer>", "[]", coords=coords)["score"] == 7.0


def test_gui_point_in_box_in_rel1000():
    label = json.dumps([{"bbox_2d": [84, 168, 420, 840], "point_2d": [252, 504]}])
    inside = '<think>t</think><answer>[{"point_2d": [480, 900]}]</answer>'  # 403 px, 756 px: inside
    assert gui.compute_score(inside, label, coords="rel1000")["accuracy"] == 1.0
    assert gui.compute_score(inside, label, coords="abs840")["accuracy"] == 0.0  # x 480 > 420
    assert gui.compute_score(inside, label, coords="rel1000")["score"] == gui.MAX_SCORE


def test_dispatcher_reads_the_convention_from_extra_info_as_the_reward_manager_passes_it():
    from verl_ext.visurf.scoring import score_row

    for source in ("refcocog", "realiad", "isic2018"):
        row = score_row(compute_score, source, REL_ANSWER, LABEL, {"id": "r0"}, is_gt=False,
                        gt_thinking_reward="zero", coords="rel1000")
        assert row["score"] == 7.0, source
        assert compute_score(source, REL_ANSWER, LABEL, {})["score"] == 5.0  # no convention: abs840


# ----------------------------------------------------------------------------- GT rendering
def test_gt_is_rendered_in_the_model_convention_and_scores_the_max_there():
    gt = align_gt(LABEL, "grounding", coords="rel1000")
    assert gt == '<answer>[{"bbox_2d": [100, 200, 500, 1000], "point_2d": [300, 600]}]</answer>'
    assert align_gt(LABEL, "grounding") == '<answer>[{"bbox_2d": [84, 168, 420, 840], "point_2d": [252, 504]}]</answer>'
    # rounding: 10 px -> 11.904... -> 12; 5 px -> 5.95 -> 6
    odd = json.dumps([{"bbox_2d": [5, 10, 839, 839], "point_2d": [10, 5]}])
    assert json.loads(align_gt(odd, "grounding", coords="rel1000")[8:-9]) == [
        {"bbox_2d": [6, 12, 999, 999], "point_2d": [12, 6]}]
    for task, source in (("grounding", "refcocog"), ("anomaly", "realiad"), ("gui", "omniact")):
        text = render_gt(LABEL, source, coords="rel1000")
        assert compute_score(source, text, LABEL, {"is_gt": True, "coords": "rel1000"})["accuracy"] == (
            3.0 if task != "gui" else 1.0)
    assert render_gt(LABEL, "omniact", coords="rel1000") == '<answer>[{"point_2d": [300, 600]}]</answer>'


# ----------------------------------------------------------------------------- prompts, config
def test_prompts_abs840_unchanged_rel1000_states_the_scale():
    assert build_prompt("grounding", "the cat") == TASK_PROMPT["grounding"].format(question="the cat")
    rel = build_prompt("grounding", "the cat", coords="rel1000")
    assert rel.startswith(TASK_PROMPT["grounding"].format(question="the cat")) and "0-1000" in rel
    assert build_prompt("math", "1+1?", coords="rel1000") == build_prompt("math", "1+1?")  # no coordinates


def test_visurf_config_validates_coords():
    from verl_ext.visurf.config import VisurfConfig

    assert VisurfConfig().coords == "auto" and VisurfConfig().resolved_coords == "abs840"
    assert VisurfConfig(coords="rel1000").gt_response(LABEL, "grounding").startswith('<answer>[{"bbox_2d": [100,')
    with pytest.raises(ValueError, match="visurf.coords must be one of"):
        VisurfConfig(coords="relative")


# ----------------------------------------------------------------------------- data_prep, start-up
def test_data_prep_writes_canonical_labels_and_declares_the_prompt_convention(tmp_path):
    from data_prep.synthetic import generate

    generate("grounding", 2, 0, str(tmp_path / "abs.parquet"), image_size=56)
    generate("grounding", 2, 0, str(tmp_path / "rel.parquet"), image_size=56, coords="rel1000")
    a, r = pd.read_parquet(tmp_path / "abs.parquet"), pd.read_parquet(tmp_path / "rel.parquet")
    assert "coords" not in a.extra_info[0]  # the paper's files are unchanged
    assert r.extra_info[0]["coords"] == "rel1000"
    labels = lambda df: list(df.reward_model.map(lambda m: m["ground_truth"]))  # noqa: E731
    assert labels(a) == labels(r)
    assert r.prompt[0][0]["content"] == a.prompt[0][0]["content"] + C.prompt_hint("rel1000")


def _config(model_dir, train, coords="auto"):
    from recipe.visurf.dry_run import compose_rl

    return compose_rl([f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={train}",
                       f"data.val_files={train}", f"visurf.coords={coords}"])


def test_startup_resolves_the_convention_and_stops_a_mismatch_naming_the_fix(tmp_path, tiny_model_dir,
                                                                             tiny_qwen3_vl_dir):
    from data_prep.synthetic import generate
    from recipe.visurf.main_visurf import prepare_config

    q3 = tiny_qwen3_vl_dir
    generate("grounding", 2, 0, str(tmp_path / "abs.parquet"), image_size=56)
    generate("grounding", 2, 0, str(tmp_path / "rel.parquet"), image_size=56, coords="rel1000")
    # Qwen2.5-VL + the paper's data: abs840, as before
    assert prepare_config(_config(tiny_model_dir, tmp_path / "abs.parquet")).visurf.coords == "abs840"
    # a Qwen3-VL actor on data prepared for abs840: stopped, naming file, row and both fixes
    with pytest.raises(ValueError) as e:
        prepare_config(_config(q3, tmp_path / "abs.parquet"))
    msg = str(e.value)
    assert "visurf.coords=rel1000" in msg and f"{tmp_path / 'abs.parquet'} row 0" in msg
    assert "--coords rel1000" in msg and "visurf.coords=abs840" in msg
    # Qwen3-VL on rel1000 data: resolved to rel1000 (the GT check scores the rel1000 GT above an empty answer)
    assert prepare_config(_config(q3, tmp_path / "rel.parquet")).visurf.coords == "rel1000"
    # Qwen2.5-VL on rel1000 data: stopped the other way
    with pytest.raises(ValueError, match="prepared for rel1000"):
        prepare_config(_config(tiny_model_dir, tmp_path / "rel.parquet"))
    # an explicit override that matches the data runs (a model fine-tuned to another convention)
    assert prepare_config(_config(tiny_model_dir, tmp_path / "rel.parquet", "rel1000")).visurf.coords == "rel1000"


def test_startup_checks_every_row_not_only_the_sampled_ones(tmp_path, tiny_qwen3_vl_dir):
    """The start-up check samples the first SAMPLE_ROWS (8) rows of a source for its reward probes, but
    reads ``extra_info.coords`` of every row: row 11 of a rel1000 file, declared abs840 (missing key),
    stops a Qwen3-VL run naming that row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_prep.synthetic import generate
    from recipe.visurf.main_visurf import prepare_config
    from verl_ext.visurf.source_check import SAMPLE_ROWS

    generate("grounding", 12, 0, str(tmp_path / "rel.parquet"), image_size=56, coords="rel1000")
    table = pq.read_table(tmp_path / "rel.parquet")
    rows = table.to_pylist()
    assert SAMPLE_ROWS < 11
    rows[11]["extra_info"]["coords"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'mixed.parquet'} row 11 .*prepared for abs840"):
        prepare_config(_config(tiny_qwen3_vl_dir, tmp_path / "mixed.parquet"))
    rows[11]["extra_info"]["coords"] = "rel100"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "typo.parquet")
    with pytest.raises(ValueError, match=r"typo.parquet row 11 .*extra_info\['coords'\] must be one of"):
        prepare_config(_config(tiny_qwen3_vl_dir, tmp_path / "typo.parquet"))


# ----------------------------------------------------------------------------- evaluation
def _pred(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_evaluation_metrics_are_in_frame_pixels_whatever_the_convention(tmp_path):
    """The same perfect box answered by a Qwen2.5-VL (abs840) and a Qwen3-VL (rel1000) gets the same
    metrics; the rel1000 numbers read as absolute pixels do not. Hand-computed (inclusive pixel boxes
    rasterised on the 840 frame): [100, 200, 500, 840 (clipped)] against [84, 168, 420, 840]:
    intersection 321 x 640 = 205440, union 401 x 640 + 337 x 672 - 205440 = 277664, IoU 0.7399."""
    from recipe.visurf.evaluate import evaluate

    line = {"id": "r0", "data_source": "refcocog", "ground_truth": LABEL}
    abs_p = _pred(tmp_path, "abs.jsonl", [{**line, "response": ABS_ANSWER}])
    rel_p = _pred(tmp_path, "rel.jsonl", [{**line, "response": REL_ANSWER}])
    keyed = _pred(tmp_path, "keyed.jsonl", [{**line, "response": REL_ANSWER, "coords": "rel1000"}])
    qwen25 = evaluate(predictions=abs_p, out=tmp_path / "e_abs", write=False)
    qwen3 = evaluate(predictions=rel_p, out=tmp_path / "e_rel", write=False, coords="rel1000")
    from_line = evaluate(predictions=keyed, out=tmp_path / "e_keyed", write=False)  # the line's own key
    misread = evaluate(predictions=rel_p, out=tmp_path / "e_mis", write=False)  # default abs840
    for report in (qwen25, qwen3, from_line):
        assert report["metrics"]["overall"]["gIoU"] == 1.0 and report["metrics"]["overall"]["BboxAcc"] == 1.0
    assert qwen25["protocol"]["options"]["coords"] == "abs840"
    assert qwen3["protocol"]["options"]["coords"] == from_line["protocol"]["options"]["coords"] == "rel1000"
    assert misread["metrics"]["overall"]["gIoU"] == pytest.approx(205440 / 277664)
    with pytest.raises(ValueError, match="says coords 'rel1000', --coords says 'abs840'"):
        evaluate(predictions=keyed, out=tmp_path / "e_clash", write=False, coords="abs840")


def test_evaluation_public_reader_maps_rel1000_into_the_frame(tmp_path):
    """The public reader's own factor (``int(v * factor + 0.5)``) with factor 0.84: the rel1000 answer
    [100, 200, 500, 1000] is read as [84, 168, 420, 840], the label itself."""
    from recipe.visurf import eval_scoring as S

    parsed = S.parse_response(REL_ANSWER, "grounding", reader="visionreasoner", coords="rel1000")
    assert parsed.boxes.tolist() == [[84, 168, 420, 840]] and parsed.points.tolist() == [[252, 504]]
    assert S.parse_response(REL_ANSWER, "gui", coords="rel1000").points.tolist() == [[252, 504]]


def test_evaluation_generate_detects_qwen3_vl_and_stops_on_abs840_prompts(tmp_path, tiny_qwen3_vl_dir):
    from data_prep.synthetic import generate
    from recipe.visurf.evaluate import PREDICTIONS, evaluate

    generate("grounding", 2, 0, str(tmp_path / "rel.parquet"), image_size=56, coords="rel1000")
    generate("grounding", 2, 0, str(tmp_path / "abs.parquet"), image_size=56)
    report = evaluate([str(tmp_path / "rel.parquet")], str(tiny_qwen3_vl_dir), tmp_path / "e", max_new_tokens=4,
                      write=False)
    assert report["protocol"]["options"]["coords"] == "rel1000" and report["n"] == 2
    lines = [json.loads(x) for x in (tmp_path / "e" / PREDICTIONS).read_text().splitlines()]
    assert [line["coords"] for line in lines] == ["rel1000", "rel1000"]
    with pytest.raises(ValueError, match=r"prepared for abs840 .*--coords rel1000"):
        evaluate([str(tmp_path / "abs.parquet")], str(tiny_qwen3_vl_dir), tmp_path / "e2", max_new_tokens=4)
    # --prompt-style rebuilds the prompts from the question for the model's convention: no mismatch left
    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.evaluate import restyle_prompt

    row = restyle_prompt(next(iter_rows([str(tmp_path / "abs.parquet")])), "visurf", "rel1000")
    assert row["prompt"][0]["content"].endswith(C.prompt_hint("rel1000"))
    report = evaluate([str(tmp_path / "abs.parquet")], str(tiny_qwen3_vl_dir), tmp_path / "e3", max_new_tokens=4,
                      prompt_style="visurf", write=False)
    assert report["n"] == 2 and report["protocol"]["options"]["coords"] == "rel1000"


# ----------------------------------------------------------------------------- data_prep.to_sft
def test_to_sft_writes_the_answer_in_the_convention_the_prompt_declares(tmp_path):
    import pyarrow.parquet as pq

    from data_prep.common import DataPrepError
    from data_prep.synthetic import generate
    from data_prep.to_sft import convert

    generate("grounding", 2, 0, str(tmp_path / "rel.parquet"), image_size=56, coords="rel1000")
    generate("grounding", 2, 0, str(tmp_path / "abs.parquet"), image_size=56)
    assert convert(tmp_path / "rel.parquet", tmp_path / "rel_sft.parquet") == 2
    assert convert(tmp_path / "abs.parquet", tmp_path / "abs_sft.parquet") == 2
    rel = pq.read_table(tmp_path / "rel_sft.parquet").to_pylist()
    ab = pq.read_table(tmp_path / "abs_sft.parquet").to_pylist()
    for r, a in zip(rel, ab):
        label = r["reward_model"]["ground_truth"]
        assert label == a["reward_model"]["ground_truth"]  # the same canonical label
        assert r["messages"][-1]["content"] == align_gt(label, "grounding", coords="rel1000")
        assert a["messages"][-1]["content"] == align_gt(label, "grounding")
        assert r["messages"][0]["content"].endswith(C.prompt_hint("rel1000"))
    assert any(r["messages"][-1] != a["messages"][-1] for r, a in zip(rel, ab))  # some row has a box
    with pytest.raises(DataPrepError, match=r"row 0 .*prepared for abs840 .*--coords says rel1000"):
        convert(tmp_path / "abs.parquet", tmp_path / "x.parquet", coords="rel1000")
