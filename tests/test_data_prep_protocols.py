"""Data prep follows the public protocols (issue 14): prompt styles, MathVista's official layout,
pycocotools masks, ReasonSeg/gRefCOCO target rules, Real-IAD's archive layout, safe refs pickles.
Fixtures from real public records live in tests/data_prep_fixtures.py (sources named there)."""

from __future__ import annotations

import os
import sys

import numpy as np
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


# ---------------------------------------------------------------------------------------------
# Item 2: COCO masks are pycocotools' masks (real RefCOCO/COCO record: annotation 3007)
# ---------------------------------------------------------------------------------------------
def coco_api_mask(instances_path, ann_id):
    """The reference: pycocotools' COCO API (annToMask = decode(annToRLE), frPyObjects + merge)."""
    from pycocotools.coco import COCO

    coco = COCO(str(instances_path))
    return coco.annToMask(coco.anns[ann_id]).astype(bool)


def test_real_refcoco_polygon_mask_equals_pycocotools(tmp_path, capsys):
    from data_prep import _coco, refcoco

    inst = F.make_refcoco_real(tmp_path / "refer")
    capsys.readouterr()
    ref = coco_api_mask(inst, 3007)
    ours = _coco.ann_mask(F.REFCOCO_ANN_3007, 640, 424, "ann 3007")
    assert ours.shape == (424, 640) and (ours == ref).all()
    assert ours.sum() == 196  # (the former PIL fill + outline gave 225)
    assert common.mask_box_point(ours) == ([264, 217, 284, 231], [273, 224])
    out = tmp_path / "r.parquet"
    assert refcoco.main(["--root", str(tmp_path / "refer"), "--dataset", "refcoco", "--split", "val",
                         "--out", str(out), "--quiet"]) == 0
    rs = pq.read_table(out).to_pylist()
    assert [r["extra_info"]["id"] for r in rs] == ["0_0", "0_1", "0_2"]
    assert [r["extra_info"]["question"] for r in rs] == ["the lady with the blue shirt", "lady w back to us", "blue shirt"]
    # 840 frame: x*840/640, y*840/424, +0.5, truncated (the former rasteriser: [345, 428, 374, 460])
    assert rs[0]["reward_model"]["ground_truth"] == '[{"bbox_2d": [347, 430, 373, 458], "point_2d": [358, 444]}]'
    assert (rs[0]["extra_info"]["width"], rs[0]["extra_info"]["height"]) == (640, 424)


def test_rle_masks_equal_pycocotools(tmp_path):
    import json

    from pycocotools import mask as mask_utils

    from data_prep import _coco

    target = np.zeros((30, 40), dtype=np.uint8, order="F")
    target[3:9, 5:20] = 1
    target[20:28, 30:33] = 1
    compressed = mask_utils.encode(target)
    # uncompressed RLE (COCO crowd annotations): run lengths, column-major, starting with zeros
    flat = target.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    counts = runs if flat[0] == 0 else [0] + runs
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [5, 3, 28, 25], "area": 114,
             "segmentation": {"size": [30, 40], "counts": counts}},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 3, 28, 25], "area": 114,
             "segmentation": {"size": [30, 40], "counts": compressed["counts"].decode("ascii")}}]
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(F.coco_instances([{"id": 1, "file_name": "x.jpg", "width": 40, "height": 30}], anns)))
    for a in anns:
        m = _coco.ann_mask(a, 40, 30, "r")
        assert (m == coco_api_mask(inst, a["id"])).all() and (m == target.astype(bool)).all()
    with pytest.raises(common.RowError, match=r"has size \[30, 40\], image is 31x40"):
        _coco.ann_mask(anns[0], 40, 31, "r")


# ---------------------------------------------------------------------------------------------
# Item 4: gRefCOCO refs whose targets are all crowd are kept (ReLA); mixed refs drop the crowd
# ---------------------------------------------------------------------------------------------
def test_target_anns_crowd_rule():
    from data_prep._coco import target_anns

    a, b, c = {"id": 1, "iscrowd": 0}, {"id": 2, "iscrowd": 1}, {"id": 3, "iscrowd": 1}
    assert target_anns([a, b]) == [a]
    assert target_anns([b, c]) == [b, c]
    assert target_anns([]) == []


# ---------------------------------------------------------------------------------------------
# Item 6: refs pickles are loaded without running code
# ---------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refs_pickle_referencing_os_system_is_refused(tmp_path, capsys):
    from data_prep import refcoco

    marker = tmp_path / "pwned"
    ref = dict(F.REFCOCO_REF_0, image_id=98304, ann_id=3007, split="val", extra=_Evil(marker))
    F.make_refcoco_real(tmp_path / "refer", refs=[ref])
    refs_path = tmp_path / "refer" / "refcoco" / "refs(unc).p"
    assert b"system" in refs_path.read_bytes()
    out = tmp_path / "r.parquet"
    assert refcoco.main(["--root", str(tmp_path / "refer"), "--dataset", "refcoco", "--split", "val",
                         "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"refusing to load pickle {refs_path}" in err
    assert "references the global" in err and "system" in err
    assert not marker.exists() and not out.exists()


def test_refs_pickle_plain_data_loads_py2_and_py3(tmp_path):
    import pickle

    from data_prep import _coco

    refs = [F.REFCOCO_REF_0]
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        p = tmp_path / f"r{proto}.p"
        p.write_bytes(pickle.dumps(refs, protocol=proto))
        assert _coco.load_refs(str(p)) == refs
    # a Python 2 pickle of a byte str with a non-ASCII byte (latin1 fallback)
    p = tmp_path / "py2.p"
    p.write_bytes(b"(lp0\n(dp1\nS'raw'\np2\nS'caf\\xe9'\np3\nsa.")
    assert _coco.load_refs(str(p)) == [{"raw": "caf\u00e9"}]


# ---------------------------------------------------------------------------------------------
# Item 1: MathVista's official layout (images unzipped into data/images/)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["official", "root"])
def test_mathvista_official_layout(tmp_path, layout):
    from data_prep import mathvista

    root = F.make_mathvista_root(tmp_path / "MathVista", layout=layout)
    out = tmp_path / "mv.parquet"
    assert mathvista.main(["--root", str(root), "--split", "testmini", "--out", str(out), "--quiet"]) == 0
    rs = pq.read_table(out).to_pylist()
    assert [r["extra_info"]["id"] for r in rs] == list(F.MATHVISTA_RECORDS)  # every record converted
    assert [(r["extra_info"]["width"], r["extra_info"]["height"]) for r in rs] == [
        (m["metadata"]["img_width"], m["metadata"]["img_height"]) for m in F.MATHVISTA_RECORDS.values()]
    assert [r["extra_info"]["question"] for r in rs] == list(F.MATHVISTA_QUERIES.values())


def test_mathvista_missing_image_names_the_official_path(tmp_path, capsys):
    from data_prep import mathvista

    root = F.make_mathvista_root(tmp_path / "MathVista")
    os.remove(os.path.join(root, "data", "images", "5.jpg"))
    out = tmp_path / "mv.parquet"
    assert mathvista.main(["--root", str(root), "--out", str(out), "--quiet", "--strict"]) == 1
    assert f"missing image file: {os.path.join(root, 'data', 'images', '5.jpg')} (record pid 5" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Item 3: ReasonSeg samples without a target region are non-object rows (every sample kept);
# covered with exact rows in test_data_prep_sources.test_reasonseg. Item 5: Real-IAD's nested
# realiad_jsons/realiad_jsons/ layout (what the official archive unzips to)
# ---------------------------------------------------------------------------------------------
def test_reasonseg_val_keeps_every_readable_sample(tmp_path):
    from data_prep import reasonseg

    F.make_reasonseg(tmp_path / "rs")
    out = tmp_path / "rs.parquet"
    assert reasonseg.main(["--root", str(tmp_path / "rs"), "--split", "val", "--out", str(out), "--quiet"]) == 0
    rs = pq.read_table(out).to_pylist()
    # 4 samples, one malformed JSON: the other 3 are all rows, the target-less one a non-object row
    assert [(r["extra_info"]["id"], r["extra_info"]["non_object"], r["reward_model"]["ground_truth"] == "[]")
            for r in rs] == [("a", False, False), ("b 12", False, False), ("d", True, True)]


@pytest.mark.parametrize("category", ["audiojack", "all"])
def test_realiad_nested_json_layout(tmp_path, category):
    flat, nested = tmp_path / "flat.parquet", tmp_path / "nested.parquet"
    F.make_realiad(tmp_path / "a")
    F.make_realiad(tmp_path / "b", nested=True)
    assert os.listdir(tmp_path / "b" / "realiad_jsons") == ["realiad_jsons"]
    for root, out in ((tmp_path / "a", flat), (tmp_path / "b", nested)):
        assert realiad.main(["--root", str(root), "--category", category, "--out", str(out), "--quiet"]) == 0
    a, b = pq.read_table(flat).to_pylist(), pq.read_table(nested).to_pylist()
    assert len(b) == 3 and [r["reward_model"] for r in a] == [r["reward_model"] for r in b]


def test_realiad_missing_json_dir_names_both_places(tmp_path, capsys):
    (tmp_path / "iad").mkdir()
    assert realiad.main(["--root", str(tmp_path / "iad"), "--category", "all", "--out", str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err
    assert f"missing Real-IAD json directory: {tmp_path / 'iad' / 'realiad_jsons'}" in err
    assert str(tmp_path / "iad" / "realiad_jsons" / "realiad_jsons") in err


def test_geo3k_public_card_schema(tmp_path):
    """hiyouga/geometry3k has only images/problem/answer: the label is the answer text."""
    from data_prep import geo3k

    out = tmp_path / "g.parquet"
    assert geo3k.main(["--hf-parquet", str(F.make_geo3k_card_parquet(tmp_path / "card.parquet")), "--split", "test",
                       "--out", str(out), "--quiet"]) == 0
    (r,) = pq.read_table(out).to_pylist()
    assert r["reward_model"]["ground_truth"] == "97" and r["extra_info"]["choices"] is None
    assert r["extra_info"]["question"] == "Find $m\\angle H$" and r["extra_info"]["id"] == "0"
    assert (r["extra_info"]["width"], r["extra_info"]["height"]) == (322, 245)
    assert r["prompt"][0]["content"] == build_prompt("math", "Find $m\\angle H$")
