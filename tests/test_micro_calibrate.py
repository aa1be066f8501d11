"""recipe/visurf/micro/calibrate.py: part (d) per relation on hand-made records, the band, the printed
summary, the CLI's errors, and a real calibration of a toy-size base (built, evaluated greedy and sampled)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from data_prep.synthetic import grid_label
from recipe.visurf.micro.base import BaseSpec
from recipe.visurf.micro.calibrate import CALIBRATION_SEED, D_BAND, by_relation, calibrate, in_band, main, summary_lines

GREEN_CIRCLE = grid_label("green", "circle", 84)  # right of the red circle
RED_CIRCLE = grid_label("red", "circle", 84)
GREEN_SQUARE = grid_label("green", "square", 84)  # below the green circle


def _rec(i: int, part: str, gt: str, answer: str) -> dict:
    return {"id": f"grid_target-{part}-101-{i}", "data_source": "synthetic_grounding", "ground_truth": gt,
            "response": f"<think>t</think><answer>{answer}</answer>"}


def test_by_relation_counts_part_d_rows_per_relation_under_the_strict_rules():
    records = [
        _rec(0, "d", GREEN_CIRCLE, GREEN_CIRCLE),  # right of: reasoned, correct
        _rec(1, "d", GREEN_CIRCLE, RED_CIRCLE),  # right of: answered the named object (wrong)
        _rec(2, "d", GREEN_SQUARE, GREEN_SQUARE),  # below: correct
        _rec(3, "d", GREEN_SQUARE, "[]"),  # below: strict rules, [] is wrong on a present object
        _rec(4, "a", RED_CIRCLE, RED_CIRCLE),  # not part (d): not counted
    ]
    questions = {"grid_target-d-101-0": "the shape right of the red circle",
                 "grid_target-d-101-1": "the shape right of the red circle",
                 "grid_target-d-101-2": "the shape below the green circle",
                 "grid_target-d-101-3": "the shape below the green circle"}
    assert by_relation(records, questions) == {"below": [1, 2], "right of": [1, 2]}
    assert by_relation(records[4:], questions) == {}


def test_band_and_summary_lines():
    assert D_BAND == (0.2, 0.5)
    assert in_band(0.2) and in_band(0.5) and in_band(0.31)
    assert not in_band(0.19) and not in_band(0.51)
    report = {"base": "base-x", "spec": {"reason_skill": [["right of", 0.95], ["above", 0.5]], "steps": 800},
              "rows": 384, "seed": CALIBRATION_SEED, "samples": 2,
              "greedy": {"acc_a": 1.0, "acc_b": 0.0, "acc_c": 0.0, "acc_d": 0.25},
              "greedy_d_by_relation": {"above": [4, 29], "right of": [16, 16]},
              "sampled": {"sampled_a": 0.89, "sampled_b": 0.0, "sampled_c": 0.0, "sampled_d": 0.3125},
              "band": [0.2, 0.5], "d_in_band": True}
    assert summary_lines(report) == [
        "base-x: reason odds right of 0.95, above 0.5; 800 steps",
        "calibration rows: 384 grid_target rows (seed 301), a quarter per part",
        "greedy: (a) 1.00 (b) 0.00 (c) 0.00 (d) 0.25; (d) by relation: above 4/29, right of 16/16",
        "temperature 1 (2 samples per row): (a) 0.89 (b) 0.00 (c) 0.00 (d) 0.31",
        "part (d) sampled 0.31: inside the 20%-50% band",
    ]
    report.update(sampled={**report["sampled"], "sampled_d": 0.08}, d_in_band=False)
    assert summary_lines(report)[-1] == "part (d) sampled 0.08: OUTSIDE the 20%-50% band"


@pytest.mark.parametrize("argv,message", [
    (["--odds", "0.9", "1.5", "0.3", "0.1"], "--odds must be probabilities in [0, 1]"),
    (["--odds", "0.9", "0.5"], "expected 4 arguments"),
    (["--rows", "2"], "--rows must be >= 4"),
])
def test_cli_rejects_bad_settings(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_calibrate_a_toy_base_end_to_end(tmp_path):
    """A real (toy-size) base built and measured: the report's counts add up to the rows generated."""
    spec = replace(BaseSpec(), steps=20, n_source=64, n_relation=32)
    report = calibrate(spec, tmp_path / "out", rows=8, samples=1, cache=tmp_path / "cache", log=lambda m: None)
    assert report["base"] == f"base-{spec.key()}" and report["rows"] == 8 and report["seed"] == CALIBRATION_SEED
    assert report["greedy"]["n"] == 8
    relations = report["greedy_d_by_relation"]
    assert sum(n for _, n in relations.values()) == 2  # a quarter of the rows are part (d)
    assert sum(k for k, _ in relations.values()) / 2 == pytest.approx(report["greedy"]["acc_d"])
    assert set(report["sampled"]) == {"sampled_a", "sampled_b", "sampled_c", "sampled_d"}
    assert report["d_in_band"] == in_band(report["sampled"]["sampled_d"])
    assert json.loads((tmp_path / "out" / "calibration.json").read_text()) == json.loads(json.dumps(report))
