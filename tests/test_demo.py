"""The CPU main job (``recipe/visurf/micro/demo.py``): its lrs are the full micro run's choice, its table."""

import json
from pathlib import Path

from recipe.visurf.micro.base import BaseSpec
from recipe.visurf.micro.demo import LRS, RUNS, before_after_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_main_jobs_lrs_are_the_full_runs_choice():
    """issue 17 item 6: the main job trains each method at the lr the full reproduction chose on validation
    rows (``docs/results/micro.json`` ``chosen_lr``), for the base it was chosen on (the current one)."""
    data = json.loads((ROOT / "docs" / "results" / "micro.json").read_text())
    assert data["settings"]["base_key"] == BaseSpec().key(), \
        "docs/results/micro.json is not a run of the current base: rerun examples/reproduce_micro.sh"
    assert set(data["lr_grid"]) >= set(LRS) and all(len(data["lr_grid"][m]) == 3 for m in LRS)
    assert {m for m, _ in RUNS} == set(LRS)
    assert LRS == {m: data["chosen_lr"][m] for m in LRS}


def test_before_after_table_rows():
    h = {"acc": 0.3, "acc_a": 1.0, "acc_b": 0.0, "acc_c": 0.0, "acc_d": 0.22, "format": 1.0, "ll_b": -123.25, "ll_d": -7.3}
    lines = before_after_table([("base", h), ("ViSurf", {**h, "acc_b": 0.5})]).splitlines()
    assert lines[0].split() == ["model", "acc", "(a)", "known", "(b)", "new", "(c)", "none", "(d)", "reason",
                                "format", "LL", "(b)", "LL", "(d)"]
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    assert lines[2].split() == ["base", "0.30", "1.00", "0.00", "0.00", "0.22", "1.00", "-123.2", "-7.3"]
    assert lines[3].split()[3] == "0.50"


def test_jobs_must_be_positive(capsys):
    import pytest

    from recipe.visurf.micro import demo, driver

    for main in (demo.main, driver.main):
        with pytest.raises(SystemExit) as e:
            main(["--jobs", "0"])
        assert e.value.code == 2 and "--jobs must be >= 1, got 0" in capsys.readouterr().err
