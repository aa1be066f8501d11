"""Each data_prep CLI on a miniature copy of its public raw format (tests/data_prep_fixtures.py):
exact output rows, 840-frame coordinates, non-object rows, skips and error messages."""

from __future__ import annotations

import io
import json
import os
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import data_prep_fixtures as F

from data_prep import (
    common,
    geo3k,
    grefcoco,
    isic2018,
    mathvista,
    omniact,
    realiad,
    reasonseg,
    refcoco,
    visurf_mix,
)
from verl_ext.constants import build_prompt


def rows(path):
    return pq.read_table(path).to_pylist()


def labels(path):
    return {r["extra_info"]["id"]: json.loads(r["reward_model"]["ground_truth"]) for r in rows(path)}


def obj(b, p):
    return {"bbox_2d": b, "point_2d": p}


def test_grefcoco_rows_exact(tmp_path, capsys):
    F.make_grefcoco(tmp_path / "ds")
    out = tmp_path / "g.parquet"
    assert grefcoco.main(["--root", str(tmp_path / "ds"), "--split", "val", "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    assert [r["extra_info"]["id"] for r in rs] == ["10_1", "11_2", "11_3", "12_5", "13_6", "14_7"]
    assert [r["extra_info"]["index"] for r in rs] == list(range(6))
    first = rs[0]
    # polygon corners (10, 10)-(29, 19) on a 100x50 image: pycocotools fills pixels x 10..28, y 10..18;
    # int(v*840/W+0.5); point = most interior pixel (14, 14)
    assert first["reward_model"] == {"style": "rule", "ground_truth": json.dumps([obj([84, 168, 235, 302], [118, 235])])}
    assert first["prompt"] == [{"role": "user", "content": build_prompt("grounding", "the brown box")}]
    assert first["data_source"] == "grefcoco" and first["ability"] == "grounding"
    ei = first["extra_info"]
    assert (ei["width"], ei["height"], ei["split"], ei["task"], ei["non_object"], ei["num_objects"]) == (100, 50, "val", "grounding", False, 1)
    img = Image.open(io.BytesIO(first["images"][0]["bytes"]))
    assert img.size == (840, 840) and img.format == "JPEG"
    # multi-target: one object per annotation (polygon + RLE), same label for both sentences
    lab = labels(out)
    # polygon (0, 0)-(9, 9) -> pixels 0..8 on 200x100; the RLE covers x 100..149, y 40..59
    assert lab["11_2"] == lab["11_3"] == [obj([0, 0, 34, 67], [17, 34]), obj([420, 336, 626, 496], [458, 412])]
    # no target -> non-object row
    assert lab["12_5"] == [] and rs[3]["extra_info"]["non_object"] is True
    # all targets crowd: kept, the crowd annotation's mask (pixels 0..3) is the target
    assert lab["13_6"] == [obj([0, 0, 13, 25], [4, 8])]
    assert lab["14_7"] == [obj([14, 14, 56, 56], [28, 28])]
    summary = capsys.readouterr().out
    assert "rows written         6" in summary and "non-object rows      1 (16.7%)" in summary
    assert "rows skipped         0" in summary


def test_grefcoco_errors_name_file_and_record(tmp_path, capsys):
    F.make_grefcoco(tmp_path / "ds", missing_image=True)
    out = tmp_path / "g.parquet"
    args = ["--root", str(tmp_path / "ds"), "--split", "val", "--out", str(out), "--quiet"]
    assert grefcoco.main(args + ["--strict"]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert "error (missing_file): missing image file" in err and "ref_id 14" in err  # the first bad record aborts
    assert grefcoco.main(args) == 0
    text = capsys.readouterr().out
    assert "skipped: missing_file" in text and "COCO_train2014_000000000003.jpg" in text and "ref_id 14" in text

    F.make_grefcoco(tmp_path / "ds2", outside=True)
    assert grefcoco.main(["--root", str(tmp_path / "ds2"), "--split", "val", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "coords_outside_image" in text and "(80, 1) outside the 60x60 image" in text

    (tmp_path / "ds2" / "grefcoco" / "instances.json").write_text("{not json")
    assert grefcoco.main(["--root", str(tmp_path / "ds2"), "--split", "val", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "malformed JSON" in err and "instances.json" in err and "line 1" in err
    assert grefcoco.main(["--root", str(tmp_path / "nowhere"), "--split", "val", "--out", str(out)]) == 1
    assert "missing gRefCOCO refs file" in capsys.readouterr().err


def test_refcocog_pickle(tmp_path):
    F.make_refcoco(tmp_path / "rs")
    out = tmp_path / "r.parquet"
    assert refcoco.main(["--root", str(tmp_path / "rs"), "--dataset", "refcocog", "--split-by", "umd",
                         "--split", "val", "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    assert [r["extra_info"]["question"] for r in rs] == ["the right half", "right"]
    assert {r["data_source"] for r in rs} == {"refcocog"}
    # polygon corners (40, 0)-(79, 39) on 80x40: pycocotools fills x 40..78, y 0..38
    assert labels(out)["0_0"] == [obj([420, 0, 819, 798], [620, 399])]
    assert refcoco.main(["--root", str(tmp_path / "rs"), "--dataset", "refcocog", "--split", "val",
                         "--sentences", "first", "--out", str(out), "--quiet"]) == 0
    assert len(rows(out)) == 1
    assert refcoco.main(["--root", str(tmp_path / "rs"), "--dataset", "refcocog", "--split", "testA",
                         "--out", str(out)]) == 1


def test_reasonseg(tmp_path, capsys):
    F.make_reasonseg(tmp_path / "ReasonSeg")
    out = tmp_path / "rs.parquet"
    assert reasonseg.main(["--root", str(tmp_path / "ReasonSeg"), "--split", "val", "--out", str(out), "--quiet"]) == 0
    lab = labels(out)
    # flag shape dropped; two target components, reading order
    assert lab["a"] == [obj([210, 105, 410, 305], [305, 200]), obj([630, 630, 725, 725], [672, 672])]
    assert lab["b 12"] == [obj([0, 0, 189, 189], [84, 84])]  # cp1252 JSON, space in the name
    assert lab["d"] == [] and rows(out)[2]["extra_info"]["non_object"] is True  # empty target: kept, non-object
    assert [r["extra_info"]["question"] for r in rows(out)] == ["the thing to steer", "café sign", "the unicorn"]
    assert "malformed JSON in" in capsys.readouterr().out
    assert reasonseg.main(["--root", str(tmp_path / "ReasonSeg"), "--split", "val", "--all-texts", "--out", str(out), "--quiet"]) == 0
    assert [r["extra_info"]["id"] for r in rows(out)] == ["a_0", "a_1", "b 12", "d"]


def test_omniact(tmp_path, capsys):
    F.make_omniact(tmp_path / "om")
    out = tmp_path / "o.parquet"
    assert omniact.main(["--root", str(tmp_path / "om"), "--split", "test", "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    assert rs[0]["extra_info"]["question"] == "open the settings"
    assert rs[0]["ability"] == "gui_grounding"
    assert rs[0]["prompt"][0]["content"] == build_prompt("gui", "open the settings")
    lab = labels(out)
    assert lab["0"] == [obj([210, 210, 252, 294], [231, 252])]  # smallest box holding the click
    assert lab["1"] == [obj([0, 420, 420, 839], [210, 630])]  # web screen1.png / screen1_boxes.json
    assert "no_click" in capsys.readouterr().out


def test_realiad(tmp_path):
    F.make_realiad(tmp_path / "iad")
    out = tmp_path / "ri.parquet"
    assert realiad.main(["--root", str(tmp_path / "iad"), "--category", "audiojack", "--split", "test",
                         "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    got = [(r["extra_info"]["non_object"], json.loads(r["reward_model"]["ground_truth"])) for r in rs]
    assert got == [
        (True, []),
        (False, [obj([84, 84, 244, 160], [118, 118]), obj([420, 588, 496, 664], [454, 622])]),
        (True, []),  # NG view without a mask counts as normal
    ]
    assert rs[0]["ability"] == "anomaly_detection" and rs[0]["extra_info"]["question"] == "audiojack"
    assert realiad.main(["--root", str(tmp_path / "iad"), "--category", "pcb", "--out", str(out)]) == 1


def test_isic(tmp_path, capsys):
    F.make_isic(tmp_path / "isic")
    out = tmp_path / "i.parquet"
    assert isic2018.main(["--root", str(tmp_path / "isic"), "--split", "validation", "--out", str(out), "--quiet"]) == 0
    # mask x 40..80, y 30..60 on 120x90; most interior pixel (55, 45)
    assert labels(out) == {"ISIC_0000001": [obj([280, 280, 560, 560], [385, 420])]}
    assert "empty lesion mask" in capsys.readouterr().out


def test_mathvista_root_and_hf(tmp_path):
    F.make_mathvista_root(tmp_path / "mv")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert mathvista.main(["--root", str(tmp_path / "mv"), "--split", "testmini", "--out", str(a), "--quiet"]) == 0
    assert mathvista.main(["--hf-parquet", str(F.make_mathvista_parquet(tmp_path / "mv.parquet")), "--out", str(b), "--quiet"]) == 0
    for path in (a, b):
        rs = rows(path)
        assert [r["extra_info"]["id"] for r in rs] == ["2", "5", "7", "17"]
        assert [r["reward_model"]["ground_truth"] for r in rs] == ["1000", "A", "B", "A"]  # "97", "quarter", "5"
        assert rs[2]["extra_info"]["choices"] == F.MATHVISTA_RECORDS["7"]["choices"]
        assert rs[0]["prompt"][0]["content"] == build_prompt("math", F.MATHVISTA_QUERIES["2"])
        assert rs[0]["ability"] == "math" and rs[0]["extra_info"]["non_object"] is False


def test_geo3k(tmp_path, capsys):
    out = tmp_path / "g.parquet"
    assert geo3k.main(["--hf-parquet", str(F.make_geo3k_parquet(tmp_path / "geo.parquet")), "--split", "train",
                       "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    assert [r["reward_model"]["ground_truth"] for r in rs] == ["B", "\\frac{1}{2}"]
    assert rs[0]["extra_info"]["question"] == "Find x.\nChoices:\n(A) 1\n(B) 3\n(C) 5\n(D) 7"
    assert all(r["prompt"][0]["content"].count("<image>") == 1 for r in rs)
    assert "expected exactly one image, found 0" in capsys.readouterr().out


def test_visurf_mix(tmp_path, capsys):
    out = tmp_path / "v.parquet"
    src = F.make_visurf_parquet(tmp_path / "mix.parquet")
    assert visurf_mix.main(["--hf-parquet", str(src), "--out", str(out), "--quiet"]) == 0
    rs = rows(out)
    lab = labels(out)
    assert lab == {"a": [obj([416, 7, 833, 553], [648, 249])], "b": [], "c": [obj([10, 20, 110, 220], [50, 60])]}
    assert rs[0]["images"][0]["bytes"] == pq.read_table(src).to_pylist()[0]["image"]["bytes"]  # 840 image kept as is
    assert Image.open(io.BytesIO(rs[1]["images"][0]["bytes"])).size == (840, 840)  # 300x200 resized
    assert (rs[0]["extra_info"]["width"], rs[0]["extra_info"]["height"]) == (640, 480)
    assert rs[0]["extra_info"]["question"] == "the lady with the blue shirt"
    assert "outside the 840 frame" in capsys.readouterr().out
    assert visurf_mix.main(["--hf-parquet", str(src), "--out", str(out), "--strict", "--quiet"]) == 1
    assert "row 3 (id d)" in capsys.readouterr().err
    pq.write_table(pq.read_table(src).drop(["solution"]), tmp_path / "bad.parquet")
    assert visurf_mix.main(["--hf-parquet", str(tmp_path / "bad.parquet"), "--out", str(out)]) == 1
    assert "missing column(s) solution" in capsys.readouterr().err


@pytest.mark.parametrize("mod", [grefcoco, refcoco, reasonseg, omniact, realiad, isic2018, mathvista, geo3k, visurf_mix])
def test_help_has_example(mod, capsys):
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"python -m data_prep.{mod.__name__.split('.')[-1]}" in text


# --------------------------------------------------------------------------------------------
# Index records: one bad entry is skipped with its reason (--strict aborts), never a traceback
# --------------------------------------------------------------------------------------------
def _skipped(summary: str) -> dict[str, int]:
    import re

    return {m.group(1): int(m.group(2)) for m in re.finditer(r"skipped: (\w+)\s+(\d+)\s", summary)}


def test_coco_index_entries_are_skipped_one_by_one(tmp_path, capsys):
    root = F.make_grefcoco(tmp_path / "ds")
    d = root / "grefcoco"
    refs = json.loads((d / "grefs(unc).json").read_text())
    val = {"split": "val", "image_id": 1, "ann_id": [101]}
    refs += [
        {**val, "sentences": [{"raw": "no id"}]},  # no ref_id
        "just a string",  # not a ref dict
        {**val, "ref_id": "15", "sentences": ["The Left Thing."]},  # str ref_id among ints, a sentence as a string
        {**val, "ref_id": 10, "sentences": [{"raw": "again"}]},  # repeats ref_id 10
        {**val, "ref_id": 16, "image_id": 4, "sentences": [{"raw": "x"}]},  # its image entry has no file_name
        {**val, "ref_id": 17, "ann_id": [102], "sentences": [{"raw": "inverted"}]},  # bbox [50, 50, -10, -10]
        {**val, "ref_id": 18, "sentences": [5]},  # a sentence that is neither a dict nor a string
        {**val, "ref_id": 19, "image_id": [1], "sentences": [{"raw": "x"}]},  # an unhashable image_id
    ]
    (d / "grefs(unc).json").write_text(json.dumps(refs))
    inst = json.loads((d / "instances.json").read_text())
    inst["images"] += [{"id": 4, "width": 10, "height": 10}, {"file_name": "x.jpg"}]
    inst["annotations"] += [{"id": 102, "image_id": 1, "iscrowd": 0, "bbox": [50, 50, -10, -10]}, {"image_id": 1}]
    (d / "instances.json").write_text(json.dumps(inst))
    out = tmp_path / "g.parquet"
    args = ["--root", str(root), "--split", "val", "--out", str(out), "--quiet"]
    assert grefcoco.main(args) == 0
    summary = capsys.readouterr().out
    assert [r["extra_info"]["id"] for r in rows(out)] == ["10_1", "11_2", "11_3", "12_5", "13_6", "14_7", "15_0"]
    assert rows(out)[-1]["extra_info"]["question"] == "the left thing"
    assert _skipped(summary) == {"malformed_index": 6, "duplicate_id": 1, "missing_annotation": 2,
                                 "malformed_annotation": 1}
    assert grefcoco.main(args + ["--strict"]) == 1
    err = capsys.readouterr().err
    assert "error (malformed_index): image entry 3 of" in err and "instances.json: no file_name" in err
    # the messages name the record and what is wrong
    from data_prep import _coco

    images, anns, _ = _coco.load_instances(str(d / "instances.json"))
    recs = [r for r in _coco.ref_records(refs, images, anns, "imgs", "val", "all", "grefs.json") if "error" in r]
    messages = [r["error"][1] for r in recs]
    assert "entry 7 of grefs.json: not a ref dict ('just a string')" in messages
    assert any(m.startswith("entry 6 of grefs.json: ref without a ref_id") for m in messages)
    assert "ref_id 10 appears more than once in grefs.json (split val); the repeat (entry 9) is skipped" in messages
    assert "ref_id 18 in grefs.json: sentence 0 is 5, expected a dict with raw/sent" in messages
    assert "ref_id 19 in grefs.json: image_id [1] not in instances.json" in messages
    # an inverted COCO bbox without segmentation is not written
    with pytest.raises(common.RowError, match=r"bbox \[50, 50, -10, -10\] has width -10 / height -10"):
        _coco.ann_object({"id": 102, "bbox": [50, 50, -10, -10]}, 100, 50, "ref_id 17")
    # a refs file that is a list of strings: no ref at all, one line naming the file
    (d / "grefs(unc).json").write_text(json.dumps(["a", "b"]))
    assert grefcoco.main(args) == 1
    assert "no refs with split 'val' (splits present: ); 2 of 2 entries are not ref dicts" in capsys.readouterr().err


def test_coco_duplicate_image_ids_skip_the_refs_that_use_them(tmp_path, capsys):
    root = F.make_grefcoco(tmp_path / "ds")
    d = root / "grefcoco"
    inst = json.loads((d / "instances.json").read_text())
    inst["images"].append(dict(inst["images"][0]))  # image id 1 twice
    (d / "instances.json").write_text(json.dumps(inst))
    out = tmp_path / "g.parquet"
    assert grefcoco.main(["--root", str(root), "--split", "val", "--out", str(out), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert [r["extra_info"]["id"] for r in rows(out)] == ["11_2", "11_3", "13_6", "14_7"]  # 10 and 12 use image 1
    assert _skipped(summary) == {"duplicate_id": 3}  # the image entry and the two refs
    assert "image id 1 appears 2 times in" in summary


def test_omniact_bad_split_entries_are_skipped(tmp_path, capsys):
    root = F.make_omniact(tmp_path / "om")
    split = json.loads((root / "test.json").read_text())
    split["3"] = {**split["0"], "task": None}
    split["4"] = "data/tasks/desktop/app/task_1.1.txt"
    split["5"] = {**split["0"], "image": 5}
    (root / "test.json").write_text(json.dumps(split))
    out = tmp_path / "o.parquet"
    args = ["--root", str(root), "--split", "test", "--out", str(out), "--quiet"]
    assert omniact.main(args) == 0
    summary = capsys.readouterr().out
    assert sorted(labels(out)) == ["0", "1"] and _skipped(summary) == {"malformed_json": 3, "no_click": 1}
    assert "entry 3 in" in summary and "task is None (expected a path relative to the root)" in summary
    assert omniact.main(args + ["--strict"]) == 1
    assert "error (no_click)" in capsys.readouterr().err  # entry 2 comes first


def test_realiad_bad_samples_and_a_bad_category_file_are_skipped(tmp_path, capsys):
    root = F.make_realiad(tmp_path / "iad")
    F.make_realiad(root, category="pcb")
    jd = root / "realiad_jsons"
    meta = json.loads((jd / "audiojack.json").read_text())
    meta["test"] += [{"image_path": 5}, {"image_path": meta["test"][1]["image_path"], "mask_path": 7}, "x",
                     dict(meta["test"][0])]  # the last repeats the first sample's image: the same row id
    (jd / "audiojack.json").write_text(json.dumps(meta))
    pcb = json.loads((jd / "pcb.json").read_text())
    (jd / "pcb.json").write_text(json.dumps({**pcb, "meta": "x"}))
    out = tmp_path / "ri.parquet"
    args = ["--root", str(root), "--category", "all", "--split", "test", "--out", str(out), "--quiet"]
    assert realiad.main(args) == 0
    summary = capsys.readouterr().out
    assert len(rows(out)) == 3 and _skipped(summary) == {"malformed_json": 4, "duplicate_id": 1}
    assert "image_path is 5, expected a path" in summary
    assert realiad.main(args + ["--strict"]) == 1
    assert "image_path is 5, expected a path" in capsys.readouterr().err
    messages = [r["error"][1] for r in realiad.records(realiad.parser().parse_args(args)) if "error" in r]
    assert messages[-1] == f"{jd / 'pcb.json'}: 'meta' is 'x', expected a dict (prefix, normal_class)"
    assert any("mask_path is 7, expected a path or null" in m for m in messages)
    assert "repeats the id of output row 0; ids are unique in one file" in summary  # (any data_prep CLI)


def test_visurf_mix_keeps_every_seg_zero_object_and_rejects_a_bad_size():
    two = "<box>(10,20),(110,220)</box><points>(50,60),(70,80)</points><box>(300,300),(400,420)</box><points>(350,360)</points>"
    assert visurf_mix.parse_solution(two, "r") == [obj([10, 20, 110, 220], [50, 60]), obj([300, 300, 400, 420], [350, 360])]
    no_points = "<box>(10,20),(110,220)</box><box>(300,300),(400,420)</box>"
    assert visurf_mix.parse_solution(no_points, "r") == [obj([10, 20, 110, 220], [60, 120]),
                                                         obj([300, 300, 400, 420], [350, 360])]
    with pytest.raises(common.RowError, match="2 <box> but 1 <points>"):
        visurf_mix.parse_solution("<box>(1,2),(3,4)</box><box>(5,6),(7,8)</box><points>(2,3)</points>", "r")
    for w, h in ((-7, 480), (640, 0), (640.5, 480), (float("nan"), 480), (True, 480), ("640", 480)):
        with pytest.raises(common.RowError, match=r"row x: image (width|height) .* is not a whole number > 0"):
            common.build_row(data_source="visurf_mix", question="q", image_bytes=b"", ground_truth="[]", row_id="x",
                             split="train", width=w, height=h)
    row = common.build_row(data_source="visurf_mix", question="q", image_bytes=b"", ground_truth="[]", row_id="x",
                           split="train", width=640.0, height=480)
    assert (row["extra_info"]["width"], row["extra_info"]["height"]) == (640, 480)


def test_a_repeated_row_id_is_skipped_in_every_cli(tmp_path, capsys):
    out = tmp_path / "s.parquet"

    def convert(i, _):
        return [common.build_row(data_source="synthetic_grounding", question="q", image_bytes=b"x", ground_truth="[]",
                                 row_id=str(i % 3), split="train", width=8, height=8)]

    s = common.convert_all(data_source="synthetic_grounding", records=range(5), convert=convert, opts=None,
                           out=str(out), progress=False)
    assert [r["extra_info"]["id"] for r in rows(out)] == ["0", "1", "2"] and dict(s.skipped) == {"duplicate_id": 2}
    assert s.first_error["duplicate_id"] == ("row id '0' repeats the id of output row 0; ids are unique in one file "
                                             "(the repeat is skipped)")
    with pytest.raises(common.RowError, match="row id '0' repeats"):
        common.convert_all(data_source="synthetic_grounding", records=range(5), convert=convert, opts=None,
                           out=str(out), progress=False, strict=True)
