"""bench/bench_step.py judges itself (issue 21): its limit, ratios, verdict and quiet-host rule on
hand-computed timings. The runs themselves are not made here (bench, not test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", ROOT / "bench" / "bench_step.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_step"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(step, gen, olp, upd, steal=None):
    rows = [{"step": 1, "timing_s/step": 99.0, "timing_s/gen": 99.0, "timing_s/old_log_prob": 9.0,
             "timing_s/update_actor": 9.0}]  # warm-up: excluded
    rows += [{"step": s, "timing_s/step": step, "timing_s/gen": gen, "timing_s/old_log_prob": olp,
              "timing_s/update_actor": upd} for s in (2, 3)]
    return {"rows": rows, "steal": steal}


def test_ratios_hand_computed(bench):
    grpo = {"timing_s/step": 4.0, "timing_s/gen": 2.0, "timing_s/old_log_prob": 0.4, "timing_s/update_actor": 1.2}
    visurf = {"timing_s/step": 4.4, "timing_s/gen": 2.1, "timing_s/old_log_prob": 0.45, "timing_s/update_actor": 1.35}
    r = bench.ratios(grpo, visurf, g=8)
    assert r["limit"] == pytest.approx(1 + 1.6 / 32)  # 1.05
    assert r["gen"] == pytest.approx(1.05)
    assert r["held"] == pytest.approx((4.4 - 2.1 + 2.0) / 4.0)  # 1.075
    assert r["step"] == pytest.approx(1.1)
    assert not bench.judge(r)  # gen 1.05 > 1.03 and held 1.075 > 1.07
    assert bench.judge({**r, "gen": 1.03, "held": 1.07})
    assert not bench.judge({**r, "gen": 1.03, "held": 1.0701})


def test_run_means_skip_warmup_and_verdict(bench, capsys):
    results = {"grpo": [_run(4.0, 2.0, 0.4, 1.2, 0.0)], "visurf": [_run(4.1, 2.0, 0.45, 1.3, 0.01)]}
    assert bench.run_means(results["grpo"][0])["timing_s/step"] == 4.0
    assert bench.verdict(results, g=8)  # held 1.025 <= 1.05 + 0.02, gen 1.0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and "quiet" in out and "NOT quiet" not in out


def test_busy_host_is_named_in_the_verdict(bench, capsys):
    results = {"grpo": [_run(4.0, 2.0, 0.4, 1.2, 0.15)], "visurf": [_run(4.1, 2.0, 0.45, 1.3, 0.01)]}
    assert bench.quiet_host(results) == (0.15, False)
    bench.verdict(results, g=8)
    out = capsys.readouterr().out
    assert "NOT quiet" in out and "15.0%" in out and "(on a busy host)" in out
    assert bench.quiet_host({"grpo": [{"steal": None}], "visurf": [{"steal": None}]}) == (None, True)


def test_run_kinds_and_their_order(bench):
    assert bench.run_overrides("grpo") == ("visurf.enable=False",)
    assert bench.run_overrides("visurf") == ()
    assert bench.run_overrides("visurf_rollout_think") == ("visurf.gt_style=rollout_think",)
    kinds = ["grpo", "visurf", "visurf_rollout_think"]
    assert bench.run_order(0, kinds) == kinds and bench.run_order(1, kinds) == kinds[::-1]
    assert bench.run_order(2, ["grpo", "visurf"]) == ["grpo", "visurf"]


def test_styles_table_against_the_template(bench, capsys):
    style = _run(4.6, 2.2, 0.45, 1.3)
    for row in style["rows"]:
        row.update({"visurf/gt_borrowed_share": 0.75, "visurf/gt_think_fallback": 1.0,
                    "visurf/gt_trained_tokens_mean": 20.0})
    results = {"grpo": [_run(4.0, 2.0, 0.4, 1.2)], "visurf": [_run(4.4, 2.0, 0.45, 1.3)],
               "visurf_rollout_think": [style]}
    bench.print_styles(results, ["visurf_rollout_think"])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("visurf_rollout_think")][0]
    cells = line.split()
    # step 4.6/4.4, gen 2.2/2.0, held (4.6 - 2.2 + 2.0)/4.4 = 1.0
    assert cells[1:5] == ["4.600", f"{4.6 / 4.4:.3f}", "1.100", "1.000"]
    assert cells[5:8] == ["0.75", "1.00", "20.00"]
