"""Data prep follows the public protocols (issue 14): prompt styles, MathVista's official layout,
pycocotools masks, ReasonSeg/gRefCOCO target rules, Real-IAD's archive layout, safe refs pickles.
Fixtures from real public records live in tests/data_prep_fixtures.py (sources named there)."""

from __future__ import annotations

import os
import sys

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import data_prep_fixtures as F

from data_prep import common, realiad
from verl_ext.constants import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, build_prompt

# ---------------------------------------------------------------------------------------------
# Item 7: prompt styles
# ---------------------------------------------------------------------------------------------
# Verbatim from JIA-Lab-research/VisionReasoner vision_reasoner/models/visurf_model.py (commit
# 5c1587f): ViSurfModel.DETECTION_TEMPLATE / MATH_TEMPLATE, formatted as _generate_model_output
# does (Question=instruction.lower().strip('"!'), Answer=<the example below>), image item first.
PUBLIC_DETECTION = (
    "Please find \"{Question}\" with bboxs and points."
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    "i.e., <think> thinking process here </think>"
    "<answer>{Answer}</answer>"
)
PUBLIC_MATH = (
    "{Question} "
    "First think about the question and then provide the answer. "
    "The answer is in latex format and wrapped using the \\boxed{{}} command. "
    "The thinking process and answer are enclosed within <think> </think> and \\boxed{{}} tags, respectively. "
    "i.e., <think> thinking process here. </think>\\boxed{{2}}"
)
PUBLIC_ANSWER = "[{\"bbox_2d\": [10, 100, 200, 210], \"point_2d\": [30, 110]}, {\"bbox_2d\": [225, 296, 706, 786], \"point_2d\": [302, 410]}]"


def public_text(template: str, instruction: str) -> str:
    return "<image>" + template.format(Question=instruction.lower().strip("\"!"), Answer=PUBLIC_ANSWER)


@pytest.mark.parametrize("task", ["grounding", "gui", "lesion"])
def test_visionreasoner_detection_prompt_is_the_public_text(task):
    q = 'The Man in the RED shirt!"'
    assert build_prompt(task, q, "visionreasoner") == public_text(PUBLIC_DETECTION, q)
    assert build_prompt(task, q, "visionreasoner").startswith(
        '<image>Please find "the man in the red shirt" with bboxs and points.Compare the difference')


def test_visionreasoner_math_prompt_is_the_public_text():
    q = "Hint: Please answer the question requiring an integer answer.\nQuestion: What is X?"
    got = build_prompt("math", q, "visionreasoner")
    assert got == public_text(PUBLIC_MATH, q)
    assert got.endswith("i.e., <think> thinking process here. </think>\\boxed{2}") and "\\boxed{} command" in got


def test_default_style_unchanged_and_anomaly_has_no_public_template():
    assert DEFAULT_PROMPT_STYLE == "visurf" and set(PROMPT_STYLES) == {"visurf", "visionreasoner"}
    assert build_prompt("grounding", "A Box") == build_prompt("grounding", "A Box", "visurf")
    assert '"A Box"' in build_prompt("grounding", "A Box")  # the default style does not re-normalise
    with pytest.raises(ValueError, match="has no template for task 'anomaly'"):
        build_prompt("anomaly", "bottle cap", "visionreasoner")
    with pytest.raises(ValueError, match="unknown prompt style 'nope'; known: visurf, visionreasoner"):
        build_prompt("math", "x", "nope")


def test_prompt_style_flag_writes_the_styled_prompt(tmp_path, capsys):
    F.make_reasonseg(tmp_path / "rs")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    from data_prep import reasonseg

    base = ["--root", str(tmp_path / "rs"), "--split", "val", "--quiet"]
    assert reasonseg.main(base + ["--out", str(a)]) == 0
    assert reasonseg.main(base + ["--out", str(b), "--prompt-style", "visionreasoner"]) == 0
    ra, rb = pq.read_table(a).to_pylist(), pq.read_table(b).to_pylist()
    assert [r["reward_model"] for r in ra] == [r["reward_model"] for r in rb]
    for x, y in zip(ra, rb):
        q = x["extra_info"]["question"]
        assert x["prompt"][0]["content"] == build_prompt("grounding", q)
        assert y["prompt"][0]["content"] == public_text(PUBLIC_DETECTION, q)
    # a style without a template for the source's task fails before anything is read
    F.make_realiad(tmp_path / "iad")
    out = tmp_path / "r.parquet"
    assert realiad.main(["--root", str(tmp_path / "iad"), "--category", "all", "--out", str(out), "--quiet",
                         "--prompt-style", "visionreasoner"]) == 1
    assert "prompt style 'visionreasoner' has no template for realiad (task anomaly)" in capsys.readouterr().err
    assert not out.exists()


def test_apply_prompt_style_matches_build_row():
    kw = dict(data_source="mathvista", question="What is X?", image_bytes=b"x", ground_truth="1", row_id="1",
              split="testmini", width=2, height=2)
    assert common.apply_prompt_style(common.build_row(**kw), "visionreasoner") == common.build_row(**kw, style="visionreasoner")
