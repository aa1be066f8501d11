"""data_prep.synthetic (API + CLI) and data_prep.validate (row checks and the load through
verl's RLHFDataset with the tiny Qwen2.5-VL processor)."""

from __future__ import annotations

import io
import json
import os
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import data_prep_fixtures as F

from data_prep import grefcoco, synthetic, validate


def test_synthetic_api_fast_deterministic_and_varied(tmp_path):
    t0 = time.perf_counter()
    s = synthetic.generate("grounding", 64, 0, str(tmp_path / "g.parquet"))
    assert time.perf_counter() - t0 < 5.0  # ~1 s on a loaded 2-core machine
    assert s.rows == 64 and s.out == str(tmp_path / "g.parquet")
    rows = pq.read_table(tmp_path / "g.parquet").to_pylist()
    n_obj = [len(json.loads(r["reward_model"]["ground_truth"])) for r in rows]
    assert n_obj.count(0) >= 8 and sum(n > 1 for n in n_obj) >= 8 and n_obj.count(1) >= 8
    assert {r["data_source"] for r in rows} == {"synthetic_grounding"}
    assert rows[0]["extra_info"]["question"].startswith(("the ", "all the "))
    synthetic.generate("grounding", 64, 0, str(tmp_path / "g2.parquet"))
    assert (tmp_path / "g.parquet").read_bytes() == (tmp_path / "g2.parquet").read_bytes()
    synthetic.generate("grounding", 64, 1, str(tmp_path / "g3.parquet"))
    assert (tmp_path / "g.parquet").read_bytes() != (tmp_path / "g3.parquet").read_bytes()


def test_synthetic_small_canvas_keeps_840_labels(tmp_path):
    synthetic.generate("grounding", 32, 5, str(tmp_path / "s.parquet"), image_size=112)
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert Image.open(io.BytesIO(rows[0]["images"][0]["bytes"])).size == (112, 112)
    coords = [v for r in rows for o in json.loads(r["reward_model"]["ground_truth"]) for v in o["bbox_2d"]]
    assert max(coords) > 112 and max(coords) <= 839  # labels in the 840 frame, not canvas pixels
    # a label point scaled back to canvas pixels (x S/840) is on its shape's colour
    for r in rows:
        img = Image.open(io.BytesIO(r["images"][0]["bytes"])).convert("RGB")
        for o in json.loads(r["reward_model"]["ground_truth"]):
            x, y = (min(111, round(v * 112 / 840)) for v in o["point_2d"])
            assert img.getpixel((x, y)) in synthetic.COLORS.values()


def test_synthetic_math_and_cli(tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert synthetic.main(["--task", "math", "--n", "40", "--seed", "2", "--image-size", "64", "--out", str(out), "--quiet"]) == 0
    assert "rows written         40" in capsys.readouterr().out
    rows = pq.read_table(out).to_pylist()
    mc = [r for r in rows if r["extra_info"]["choices"]]
    assert mc and all(r["reward_model"]["ground_truth"] in "ABCD" for r in mc)
    assert all(r["reward_model"]["ground_truth"].isdigit() for r in rows if not r["extra_info"]["choices"])
    assert {r["ability"] for r in rows} == {"math"}
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic.generate("ocr", 4, 0, str(out))


def test_check_row_catches_problems(tmp_path):
    synthetic.generate("grounding", 4, 0, str(tmp_path / "g.parquet"), image_size=56)
    n, problems = validate.check_rows(validate.iter_rows(str(tmp_path / "g.parquet")))
    assert (n, problems) == (4, [])
    good = pq.read_table(tmp_path / "g.parquet").to_pylist()[0]

    def bad(**kw):
        r = json.loads(json.dumps({k: v for k, v in good.items() if k != "images"}))
        r["images"] = good["images"]
        for k, v in kw.items():
            r[k] = v
        return validate.check_row(r)

    assert bad(images=good["images"] * 2) == ["1 <image> placeholders but 2 images"]
    gt = lambda s: {"style": "rule", "ground_truth": s}
    assert any("outside the 840 frame" in p for p in bad(reward_model=gt('[{"bbox_2d": [0, 0, 900, 10], "point_2d": [1, 1]}]')))
    assert any("outside its box" in p for p in bad(reward_model=gt('[{"bbox_2d": [0, 0, 10, 10], "point_2d": [50, 1]}]')))
    assert any("not JSON" in p for p in bad(reward_model=gt("[{")))
    assert bad(data_source="nope") == ["unknown data_source 'nope'"]
    assert any("does not decode" in p for p in bad(images=[{"bytes": b"xx"}]))
    assert validate.check_label("math", "E", ["a", "b"]) and not validate.check_label("math", "B", ["a", "b"])
    assert validate.check_label("gui", "[]") == ["gui label must have exactly one object, has 0"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from verl_ext.tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny")))


def test_verl_rlhfdataset_loads_outputs(tmp_path, tiny_dir, capsys):
    """The CLIs' outputs go through verl's own RLHFDataset + processor unchanged."""
    F.make_grefcoco(tmp_path / "ds")
    g = tmp_path / "g.parquet"
    assert grefcoco.main(["--root", str(tmp_path / "ds"), "--split", "val", "--out", str(g), "--quiet"]) == 0
    synthetic.generate("math", 6, 0, str(tmp_path / "m.parquet"), image_size=84)
    for path in (g, tmp_path / "m.parquet"):
        assert validate.validate(str(path), tiny_dir) == []
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    ds = RLHFDataset(data_files=[str(g)], tokenizer=AutoTokenizer.from_pretrained(tiny_dir),
                     processor=AutoProcessor.from_pretrained(tiny_dir),
                     config=OmegaConf.create({"cache_dir": str(tmp_path / "c"), "max_prompt_length": 4096,
                                              "filter_overlong_prompts_workers": None}))
    item = ds[3]
    assert item["data_source"] == "grefcoco" and item["reward_model"]["ground_truth"] == "[]"
    assert item["index"] == 3 and item["extra_info"]["non_object"] is True
    assert [c["type"] for c in item["raw_prompt"][0]["content"]][:2] == ["image", "text"]
    # a broken file is reported, with the row
    capsys.readouterr()
    rows = pq.read_table(g).to_pylist()
    rows[1]["prompt"][0]["content"] += " <image>"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(g)), tmp_path / "bad.parquet")
    problems = validate.validate(str(tmp_path / "bad.parquet"), tiny_dir)
    assert "row 1 (id 11_2): 2 <image> placeholders but 1 images" in problems
    assert any("RLHFDataset kept 5 of 6 rows" in p for p in problems)
    assert validate.main([str(tmp_path / "bad.parquet"), "--no-verl"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_validate_reports_a_truncated_or_foreign_file_as_a_fail_line(tmp_path, capsys):
    good = tmp_path / "g.parquet"
    synthetic.generate("grounding", 4, 0, str(good), image_size=32)
    data = good.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.parquet").write_text("id,label\n1,2\n")
    assert validate.main([str(tmp_path / "cut.parquet"), str(tmp_path / "text.parquet"), str(good), "--no-verl"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"FAIL {tmp_path / 'cut.parquet'}: 1 problem(s) in 0 rows"
    assert out[1].startswith("  not a readable parquet file: ArrowInvalid:")
    assert out[2] == f"FAIL {tmp_path / 'text.parquet'}: 1 problem(s) in 0 rows"
    assert out[4] == f"OK   {good}: 4 rows"
