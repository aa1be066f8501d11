"""The micro reproduction's pieces (recipe/visurf/micro): grid task generator, training order, SFT file
order, base cache, evaluation summary, results writer; and the SMOKE run of the whole pipeline (e2e)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.synthetic import (
    COLORS,
    GRID_RELATIONS,
    HELD_OUT_TYPES,
    NEW_COLOR,
    SOURCE_COLORS,
    generate,
    grid_label,
    grid_neighbour,
    grid_scene,
)
from recipe.visurf.micro import results as R
from recipe.visurf.micro.base import BaseSpec, base_dir, base_response, build_base, draw_example, relation_answer
from recipe.visurf.micro.driver import MAIN, METHODS, best_checkpoint, by_cost, select_lr, sft_file_order
from recipe.visurf.micro.thinks import THINK_TEMPLATES, parse_query, resolve_target, think_text
from recipe.visurf.micro.evaluation import logsumexp2, report_summary
from recipe.visurf.micro.task import ordered_train, part_of, slice_rows, training_order

ROOT = Path(__file__).resolve().parents[1]

# Hand-computed labels of the 4 x 3 layout at image size 84 (112 x 84 px, cells of 28 px, half extent
# 0.36*28 = 10.08): column 0 centre 14 -> box 3.92..24.08 -> [4, 24] -> x 840/112 -> [30, 180], point 105;
# column 1 [240, 390], 315; column 2 [450, 600], 525; column 3 [660, 810], 735. Rows (x 840/84):
# row 0 [40, 240], 140; row 1 [320, 520], 420; row 2 [600, 800], 700.
X_CELLS = [([30, 180], 105), ([240, 390], 315), ([450, 600], 525), ([660, 810], 735)]
Y_CELLS = [([40, 240], 140), ([320, 520], 420), ([600, 800], 700)]
COLUMN = {"red": 0, "green": 1, "blue": 2, "purple": 3}
ROW = {"circle": 0, "square": 1, "triangle": 2}


def _rows(path):
    return pd.read_parquet(path).to_dict(orient="records")


def _pixel(row, x, y):
    return tuple(int(v) for v in Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB").getpixel((x, y)))


def test_grid_target_parts_labels_and_determinism(tmp_path):
    generate("grid_target", 32, 5, str(tmp_path / "t.parquet"), image_size=84)
    generate("grid_target", 32, 5, str(tmp_path / "t2.parquet"), image_size=84)
    assert (tmp_path / "t.parquet").read_bytes() == (tmp_path / "t2.parquet").read_bytes()
    rows = _rows(tmp_path / "t.parquet")
    assert [part_of(r["extra_info"]["id"]) for r in rows] == ["a", "b", "c", "d"] * 8
    held_out_in_a = 0
    relations_in_d = set()
    for r in rows:
        part, q = part_of(r["extra_info"]["id"]), r["extra_info"]["question"]
        scene = grid_scene(Image.open(io.BytesIO(r["images"][0]["bytes"])))
        if part == "d":  # a relational query: the named object and its neighbour both in the image
            label = json.loads(r["reward_model"]["ground_truth"])
            relation = next(rel for rel in GRID_RELATIONS if q.startswith(f"the shape {rel} the "))
            ref = tuple(q.split()[-2:])
            dr, dc = GRID_RELATIONS[relation]
            col, row = COLUMN[ref[0]] + dc, ROW[ref[1]] + dr
            target = (next(c for c, i in COLUMN.items() if i == col), next(k for k, i in ROW.items() if i == row))
            assert ref in scene and target in scene and target[0] in SOURCE_COLORS and 3 <= len(scene) <= 5
            (x1, x2), px = X_CELLS[col]
            (y1, y2), py = Y_CELLS[row]
            assert label == [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [px, py]}]
            relations_in_d.add(relation)
            continue
        color, shape = q.split()[1:]
        assert ((color, shape) in scene) == (part != "c")
        label = json.loads(r["reward_model"]["ground_truth"])
        assert r["data_source"] == "synthetic_grounding" and q in r["prompt"][0]["content"]
        assert (r["extra_info"]["width"], r["extra_info"]["height"]) == (112, 84)
        assert (color == NEW_COLOR) == (part == "b")
        (x1, x2), px = X_CELLS[COLUMN[color]]
        (y1, y2), py = Y_CELLS[ROW[shape]]
        if part == "c":  # absent: the home cell's centre shows the background, not the queried colour
            assert label == [] and _pixel(r, 14 + 28 * COLUMN[color], 14 + 28 * ROW[shape]) != COLORS[color]
        else:
            assert label == [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [px, py]}]
            assert _pixel(r, 14 + 28 * COLUMN[color], 14 + 28 * ROW[shape]) == COLORS[color]
        held_out_in_a += part == "a" and (color, shape) in HELD_OUT_TYPES
    assert 0 < held_out_in_a < 8 and len(relations_in_d) >= 3


def test_grid_source_never_shows_the_new_concept_nor_held_out_targets(tmp_path):
    generate("grid_source", 24, 0, str(tmp_path / "s.parquet"), image_size=84)
    purple = np.array(COLORS[NEW_COLOR])
    for r in _rows(tmp_path / "s.parquet"):
        color, shape = r["extra_info"]["question"].split()[1:]
        assert color in SOURCE_COLORS and (color, shape) not in HELD_OUT_TYPES
        assert len(json.loads(r["reward_model"]["ground_truth"])) == 1
        img = np.asarray(Image.open(io.BytesIO(r["images"][0]["bytes"])).convert("RGB")).astype(int)
        assert not (np.abs(img - purple).sum(-1) < 30).any()


def test_part_of_rejects_other_ids():
    assert part_of("grid_target-b-101-4") == "b" and part_of("grid_source-source-0-3") == "source"
    with pytest.raises(ValueError, match="not a grid"):
        part_of("synthetic_grounding_0_1")


def test_training_order_is_epochs_of_permutations_and_files_follow_it(tmp_path):
    idx = training_order(5, 12, seed=3)
    assert len(idx) == 12
    assert sorted(idx[:5]) == list(range(5)) and sorted(idx[5:10]) == list(range(5))
    assert (idx == training_order(5, 12, seed=3)).all() and not (idx == training_order(5, 12, seed=4)).all()
    generate("grid_target", 5, 0, str(tmp_path / "pool.parquet"), image_size=56)
    out = ordered_train(tmp_path / "pool.parquet", tmp_path / "o.parquet", steps=3, batch=4, seed=3)
    pool_ids = [r["extra_info"]["id"] for r in _rows(tmp_path / "pool.parquet")]
    assert [r["extra_info"]["id"] for r in _rows(out)] == [pool_ids[i] for i in idx]
    half = slice_rows(out, tmp_path / "h.parquet", 4, 12)
    assert [r["extra_info"]["id"] for r in _rows(half)] == [pool_ids[i] for i in idx[4:12]]


def test_ordered_train_written_by_runs_side_by_side(tmp_path):
    """driver --jobs: two runs of one seed may write its order file at once; both get the full file and
    no temporary file is left."""
    from concurrent.futures import ThreadPoolExecutor

    generate("grid_target", 6, 0, str(tmp_path / "pool.parquet"), image_size=56)
    out = tmp_path / "d" / "o.parquet"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: ordered_train(tmp_path / "pool.parquet", out, 4, 3, 1), range(8)))
    assert set(paths) == {out} and [p.name for p in out.parent.iterdir()] == ["o.parquet"]
    pool_ids = [r["extra_info"]["id"] for r in _rows(tmp_path / "pool.parquet")]
    assert [r["extra_info"]["id"] for r in _rows(out)] == [pool_ids[i] for i in training_order(6, 12, 1)]


def test_runs_start_longest_first():
    assert by_cost(["sft", "grpo", "sft_grpo", "visurf", "visurf_luffy"]) == \
        ["visurf", "visurf_luffy", "grpo", "sft_grpo", "sft"]
    runs = [("sft", 1e-4, 1), ("grpo", 1e-4, 1), ("visurf_rollout_think", 3e-4, 2), ("sft", 1e-3, 1)]
    assert by_cost(runs) == [runs[2], runs[1], runs[0], runs[3]]


def test_sft_file_order_makes_verls_shuffling_sampler_yield_the_shared_order():
    from torch.utils.data.distributed import DistributedSampler

    n = 10
    perm = sft_file_order(n)
    file_rows = [None] * n
    for j, p in enumerate(perm):  # what write_sft_rows does: row j at file position perm[j]
        file_rows[p] = j
    sampler = DistributedSampler(file_rows, shuffle=True, num_replicas=1, rank=0, drop_last=True)  # verl's
    assert [file_rows[i] for i in sampler] == list(range(n))


def test_base_cache_key_and_reuse(tmp_path):
    spec = BaseSpec()
    assert spec.key() == BaseSpec().key() and len(spec.key()) == 12
    assert BaseSpec(steps=spec.steps + 1).key() != spec.key()
    d = base_dir(spec, tmp_path)
    d.mkdir(parents=True)
    (d / "base_meta.json").write_text("{}")
    assert build_base(spec, tmp_path, log=lambda m: pytest.fail(f"retrained: {m}")) == d  # cached: no training
    assert base_response('[{"bbox_2d": [1, 2, 3, 4]}]', "look.") == \
        '<think>look.</think><answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>'
    assert base_response("[]", None) == "<answer>[]</answer>"


def test_base_examples_mix_prompts_and_styles_in_the_specified_shares():
    import random

    rng = random.Random(0)
    draws = [draw_example(rng, BaseSpec(), len(THINK_TEMPLATES)) for _ in range(20000)]
    direct = [d for d in draws if d[0]]
    think_prompt = [d for d in draws if not d[0]]
    assert all(k is None for _, k in direct)  # asked to answer directly: always answer-only
    assert abs(len(direct) / len(draws) - BaseSpec().direct_share) < 0.015
    assert abs(sum(k is None for _, k in think_prompt) / len(think_prompt) - BaseSpec().skip_think) < 0.01
    used = {k for _, k in think_prompt if k is not None}
    assert used == set(range(len(THINK_TEMPLATES)))


def test_thinks_resolve_the_target_and_describe_the_scene():
    scene = [("red", "circle"), ("green", "circle"), ("green", "square"), ("blue", "triangle")]
    assert parse_query("the red circle") == ("red", "circle", None)
    assert parse_query("the shape left of the green square") == ("green", "square", "left of")
    for bad in ("a red circle", "the circle", "the shape near the red circle"):
        with pytest.raises(ValueError, match="not a grid question"):
            parse_query(bad)
    assert grid_neighbour(("red", "circle"), "right of") == ("green", "circle")
    assert grid_neighbour(("green", "circle"), "below") == ("green", "square")
    assert grid_neighbour(("red", "circle"), "above") is None and grid_neighbour(("red", "square"), "left of") is None
    assert resolve_target("the shape right of the red circle", scene) == ("green", "circle")
    assert resolve_target("the shape below the red circle", scene) is None  # red square absent
    assert resolve_target("the blue circle", scene) is None  # absent (part c)
    assert think_text(scene, "the green square", 0) == \
        "I see red circle, green circle, green square, blue triangle. The green square is row 2 col 2."
    assert think_text(scene, "the blue circle", 1) == \
        "Objects: red circle, green circle, green square, blue triangle. There is no blue circle."
    assert think_text(scene, "the shape above the green square", 2) == \
        "4 shapes: red circle, green circle, green square, blue triangle. The green square is row 2 col 2; " \
        "above it is row 1 col 2: the green circle."
    assert think_text(scene, "the shape above the green square", 3, reasoned=False) == \
        "In the image: red circle, green circle, green square, blue triangle. The green square is row 2 col 2, " \
        "so the green square."
    assert len({think_text(scene, "the green square", k) for k in range(len(THINK_TEMPLATES))}) == len(THINK_TEMPLATES)


def test_relation_answer_is_the_label_or_the_named_objects_box(tmp_path):
    generate("grid_relation", 4, 0, str(tmp_path / "r.parquet"), image_size=84)
    for r in _rows(tmp_path / "r.parquet"):
        assert part_of(r["extra_info"]["id"]) == "d"
        assert relation_answer(r, True, 84) == r["reward_model"]["ground_truth"]
        colour, shape = r["extra_info"]["question"].split()[-2:]
        (x1, x2), px = X_CELLS[COLUMN[colour]]
        (y1, y2), py = Y_CELLS[ROW[shape]]
        assert json.loads(relation_answer(r, False, 84)) == [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [px, py]}]
        assert relation_answer(r, False, 84) == grid_label(colour, shape, 84)


def test_lr_selection_and_best_checkpoint():
    grid = {1e-4: {"best_val_acc": 0.5, "final_val_acc": 0.4}, 3e-4: {"best_val_acc": 0.6, "final_val_acc": 0.3},
            1e-3: {"best_val_acc": 0.6, "final_val_acc": 0.5}}
    assert select_lr(grid) == 1e-3  # best validation accuracy tie -> better final accuracy
    grid[1e-3]["final_val_acc"] = 0.3
    assert select_lr(grid) == 3e-4  # full tie -> the smaller lr
    curve = [{"step": 8, "acc": 0.5, "ll_a": -3.0}, {"step": 16, "acc": 0.5, "ll_a": -2.0},
             {"step": 24, "acc": 0.25, "ll_a": -1.0}]
    assert best_checkpoint(curve)["step"] == 16  # accuracy tie -> higher GT log-likelihood


def test_methods_table_is_one_switch_per_ablation():
    assert MAIN == ("sft", "grpo", "sft_grpo", "visurf") and METHODS["visurf"] == ("rl", ())
    for name, (kind, overrides) in METHODS.items():
        if name not in MAIN:
            assert kind == "rl" and len(overrides) == 1 and overrides[0].startswith("visurf."), name


def test_run_reuse_ignores_the_method_and_seed_lists():
    from recipe.visurf.micro.driver import run_key

    a = {"config": {"steps": 48, "lrs": [3e-4], "methods": ["sft"], "seeds": [1]}, "overrides": [], "lr": 3e-4}
    b = {"config": {"steps": 48, "lrs": [1e-4, 3e-4], "methods": ["sft", "grpo"], "seeds": [1, 2, 3]}, "overrides": [],
         "lr": 3e-4}
    assert run_key(a) == run_key(b) and run_key(None) is None
    assert run_key(a) != run_key({**b, "config": {**b["config"], "steps": 24}})


def test_logsumexp2_and_report_summary():
    assert logsumexp2(math.log(0.2), math.log(0.3)) == pytest.approx(math.log(0.5))
    assert logsumexp2(-1000.0, -1000.0) == pytest.approx(-1000.0 + math.log(2))
    report = {"metrics": {"overall": {"n": 6, "BboxAcc": 0.5, "format": 1.0}},
              "groups": {"a": {"BboxAcc": 1.0, "format": 1.0}, "c": {"BboxAcc": 0.0, "format": 1.0}}}
    assert report_summary(report) == {"n": 6, "acc": 0.5, "format": 1.0, "acc_a": 1.0, "format_a": 1.0,
                                      "acc_c": 0.0, "format_c": 1.0}


def _run(method, seed, acc, ret, lr=3e-4, best=None):
    test = {"acc": acc, "acc_a": acc, "acc_b": 0.0, "acc_c": 1.0, "acc_d": acc / 2, "format": 1.0, "ll_b": -3.0}
    return {"method": method, "seed": seed, "lr": lr, "steps": 4, "rows_seen": 16, "train_s": 10.0 * seed,
            "eval_s": 5.0, "test": test, "test_best": {**test, "acc": acc if best is None else best},
            "best_step": 2, "val_final": {"acc": acc}, "retention": {"acc": ret},
            "curve": [{"step": 2, "acc": acc / 2}, {"step": 4, "acc": acc}],
            "train_metrics": [{"step": 1, "visurf/gt_signal_share": 1.0}, {"step": 2, "visurf/gt_signal_share": 0.5}],
            "sft_loss": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}] if method == "sft" else []}


def test_results_summary_paired_differences_and_results_md_block(tmp_path):
    assert R.mean_std([1, 2, 3]) == [2.0, 1.0] and R.mean_std([0.5]) == [0.5, 0.0] and R.mean_std([]) is None
    runs = [_run("visurf", 1, 0.2, 0.5), _run("visurf", 2, 0.4, 0.7), _run("grpo", 1, 0.1, 0.6),
            _run("grpo", 2, 0.3, 0.6), _run("grpo", 1, 0.9, 0.6, lr=1e-3),  # not at grpo's chosen lr
            {"method": "grpo", "seed": 3, "lr": 3e-4, "failed": "boom"}, _run("sft", 1, 0.05, 0.1, lr=1e-4)]
    chosen = {"visurf": 3e-4, "grpo": 3e-4}  # sft's grid is incomplete: summarised per lr
    s = R.summarize(runs, chosen)
    assert set(s) == {"visurf", "grpo", "sft@1e-04"}
    assert s["visurf"]["seeds"] == 2 and s["visurf"]["test"]["acc"] == [0.3, round(math.sqrt(0.02), 4)]
    assert s["visurf"]["retention"] == [0.6, round(math.sqrt(0.02), 4)] and s["grpo"]["seeds"] == 2
    assert s["grpo"]["test"]["acc"] == [0.2, round(math.sqrt(0.02), 4)]
    paired = R.paired_differences(runs, chosen)
    assert set(paired) == {"grpo"}  # sft has no chosen lr
    d = paired["grpo"]["test"]["acc"]  # seed 1: 0.2 - 0.1, seed 2: 0.4 - 0.3
    assert d["n"] == 2 and d["per_seed"] == [0.1, 0.1] and d["mean"] == 0.1 and d["std"] == 0.0
    assert paired["grpo"]["test"]["retention"]["per_seed"] == [-0.1, 0.1]
    base = {"test": {"acc": 0.1, "acc_a": 0.2, "acc_b": 0.0, "acc_c": 0.0, "acc_d": 0.3, "format": 0.9},
            "retention": {"acc": 0.8}, "style_gap": {"ll_think": -6.0, "ll_answer_only": -9.0, "gap": 3.0},
            "sampled_val": {"sampled_a": 0.5, "sampled_d": 0.3}}
    grid = {"visurf": {"1e-04": {"best_val_acc": 0.2, "final_val_acc": 0.1}, "3e-04": {"best_val_acc": 0.4,
                                                                                       "final_val_acc": 0.4}}}
    table = R.markdown_table(base, s, grid, chosen, paired)
    assert "| visurf | 3e-04 | 2 | 0.30 ± 0.14 |" in table and "| base | – | – | 0.10 |" in table
    assert "| visurf | 0.20 / 0.10 | 0.40 / 0.40 | 3e-04 |" in table and "| grpo | 2 | +0.10 ± 0.00 |" in table
    assert "gap 3.0 nats" in table
    md = tmp_path / "RESULTS.md"
    md.write_text("# R\n\nbefore\n\nafter\n")
    R.update_results_md(md, "T1")
    R.update_results_md(md, "T2")
    text = md.read_text()
    assert text.count(R.TABLE_START) == 1 and "T2" in text and "T1" not in text and text.startswith("# R\n\nbefore")


def test_rollout_reward_is_rollouts_only():
    visurf = {"visurf/rollout_reward_mean": 3.0, "critic/score/mean": 3.5}  # critic/score includes the GT rows
    assert R.point_value(visurf, R.ROLLOUT_REWARD) == 3.0
    assert R.point_value({"critic/score/mean": 2.0}, R.ROLLOUT_REWARD) == 2.0  # GRPO: all rows are rollouts
    assert R.point_value({"acc": 0.5}, "acc") == 0.5 and R.point_value({}, "acc") is None


def test_write_all_writes_json_and_curves(tmp_path):
    from recipe.visurf.micro.driver import smoke_config

    base = {"val": {"acc": 0.1, "format": 0.9}, "test": {"acc": 0.1, "format": 0.9}, "retention": {"acc": 0.8}}
    runs = [_run("visurf", 1, 0.2, 0.5), _run("grpo", 1, 0.1, 0.6), _run("sft", 1, 0.1, 0.6)]
    chosen = {"visurf": 3e-4, "grpo": 3e-4, "sft": 3e-4}
    data = R.write_all(tmp_path / "micro.json", tmp_path, smoke_config(), tmp_path / "base-x", base, runs, {}, chosen,
                       12.0, commit="abc123")
    on_disk = json.loads((tmp_path / "micro.json").read_text())
    assert on_disk["summary"] == json.loads(json.dumps(data["summary"])) and on_disk["wall_s"] == 12.0
    assert on_disk["commit"] == "abc123" and on_disk["paired"]["grpo"]["test"]["acc"]["per_seed"] == [0.1]
    assert on_disk["settings"]["steps"] == 2 and on_disk["settings"]["base_key"] == smoke_config().base.key()
    for png in (R.PNG_ACC, R.PNG_GT):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert R.TABLE_START in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.e2e
def test_reproduce_micro_smoke(tmp_path):
    """SMOKE=1 bash examples/reproduce_micro.sh: small base, SFT (verl's SFT trainer) and ViSurf (the
    recipe), a 2-lr grid on one seed, 2 steps each, evaluated on validation and test rows; micro.json
    (lr grid, chosen lrs, commit), RESULTS.md block and curves written."""
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path / "out"), "VISURF_MICRO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "reproduce_micro.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "micro.json").read_text())
    assert {(r["method"], r["lr"]) for r in data["runs"]} == {(m, lr) for m in ("sft", "visurf") for lr in (1e-4, 1e-3)}
    assert set(data["chosen_lr"]) == {"sft", "visurf"} and set(data["lr_grid"]) == {"sft", "visurf"}
    assert data["complete"] and len(data["commit"]) >= 40 and data["wall_s"] > 0
    # the driver warns when the base's part (d) is outside the band the instrument assumes (the toy base
    # of SMOKE solves it rarely), and only then
    from recipe.visurf.micro.calibrate import in_band

    warned = "WARNING: the base solves part (d)" in proc.stdout
    assert warned == (not in_band(data["base"]["sampled_val"]["sampled_d"])), proc.stdout[-3000:]
    for r in data["runs"]:
        assert r["steps"] == 2 and r["rows_seen"] == 8 and [p["step"] for p in r["curve"]] == [2]
        for which in ("test", "test_best"):
            assert 0.0 <= r[which]["acc"] <= 1.0 and set(r[which]) >= {"acc_a", "acc_b", "acc_c", "acc_d", "format", "ll_d"}
        assert 0.0 <= r["retention"]["acc"] <= 1.0
    visurf = next(r for r in data["runs"] if r["method"] == "visurf")
    assert [m["step"] for m in visurf["train_metrics"]] == [1, 2]
    assert all(m["visurf/gt_signal_share"] >= 0 for m in visurf["train_metrics"])
    assert [p["step"] for p in next(r for r in data["runs"] if r["method"] == "sft")["sft_loss"]] == [1, 2]
    assert {"style_gap", "sampled_val", "val", "test"} <= set(data["base"])
    assert set(data["paired"]) == {"sft"} and data["paired"]["sft"]["test"]["acc"]["n"] == 1
    assert (tmp_path / "out" / R.PNG_ACC).is_file() and (tmp_path / "out" / "RESULTS.md").is_file()
    started = [ln.split("[", 2)[2].split("]")[0] for ln in proc.stdout.splitlines() if "] training " in ln]
    # --jobs 2 (default): the two ViSurf runs (longest first, test_runs_start_longest_first) start together;
    # which of the two threads logs first is the scheduler's choice (a fresh-clone CI run saw both orders)
    assert sorted(started[:2]) == ["visurf_lr1e-03_s1", "visurf_lr1e-04_s1"]


def test_rl_command_seeds_the_rollouts_with_the_runs_seed(tmp_path):
    """The CPU rollout samples from ``actor_rollout_ref.rollout.seed`` (``verl_ext.cpu.hf_rollout``); a driver
    that passed only ``data.seed`` (a no-op with ``data.shuffle=False``) would run seeds 1-3 identically."""
    from recipe.visurf.micro.driver import MicroConfig, rl_command

    def cmd(seed):
        return rl_command(MicroConfig(), tmp_path / "m", tmp_path / "t.parquet", tmp_path / "v.parquet", 2,
                          tmp_path / "w", (), "x", seed, 3e-4)

    assert "actor_rollout_ref.rollout.seed=1" in cmd(1) and "actor_rollout_ref.rollout.seed=2" in cmd(2)
    assert not any(a.startswith("actor_rollout_ref.rollout.seed=") for a in cmd(1) if a.endswith("=2"))


def test_gt_styles_are_paired_against_the_template_and_the_best_baseline():
    """Issue 18: each GT style minus the paper's template GT (``visurf``) and minus the best baseline (the
    baseline with the highest mean test accuracy at its chosen lr), seed by seed."""
    runs = [_run("visurf", 1, 0.5, 0.9), _run("visurf", 2, 0.3, 0.9),
            _run("grpo", 1, 0.2, 0.9), _run("grpo", 2, 0.2, 0.9),
            _run("sft", 1, 0.4, 0.9), _run("sft", 2, 0.6, 0.9),  # best baseline: mean 0.5 > 0.2
            _run("visurf_rollout_think", 1, 0.6, 0.8), _run("visurf_rollout_think", 2, 0.1, 1.0),
            _run("visurf_answer_tokens", 1, 0.5, 0.9, lr=1e-3)]  # not at ViSurf's lr: not reported
    chosen = {"visurf": 3e-4, "grpo": 3e-4, "sft": 3e-4}
    s = R.summarize(runs, chosen)
    assert R.best_baseline(s) == "sft" and R.best_baseline({}) is None
    g = R.gt_style_differences(runs, chosen, s)
    assert set(g) == {"visurf_rollout_think"} and set(g["visurf_rollout_think"]) == {"visurf", "sft"}
    vs_template = g["visurf_rollout_think"]["visurf"]["test"]
    assert vs_template["acc"]["per_seed"] == [0.1, -0.2] and vs_template["retention"]["per_seed"] == [-0.1, 0.1]
    assert vs_template["format"]["per_seed"] == [0.0, 0.0]
    assert g["visurf_rollout_think"]["sft"]["test"]["acc"]["per_seed"] == [0.2, -0.5]
    table = R.markdown_table({"test": {"acc": 0.1, "format": 1.0}, "retention": {"acc": 1.0}}, s, gt_paired=g)
    assert "| visurf_rollout_think − visurf | 2 | -0.05 ± 0.21 |" in table
    assert "| visurf_rollout_think − sft | 2 | -0.15 ± 0.49 |" in table


def test_a_later_invocation_extends_the_report(tmp_path):
    """``--only``/more seeds on the same work directory: finished runs on disk with the same settings are
    reported with the new ones (a run of another config is not), and the earlier invocation's wall time is
    kept next to the new one."""
    from recipe.visurf.micro.driver import (MicroConfig, merge_runs, prior_invocations, run_name, run_settings,
                                            runs_on_disk, smoke_config)

    cfg = smoke_config()
    out = tmp_path / "out"
    for method, seed, c in (("visurf", 1, cfg), ("sft", 1, cfg), ("grpo", 1, MicroConfig())):
        d = out / "runs" / run_name(method, 1e-4, seed)
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({**_run(method, seed, 0.5, 1.0, lr=1e-4),
                                                   "settings": run_settings(c, method, 1e-4)}))
    (out / "runs" / "broken").mkdir()
    (out / "runs" / "broken" / "result.json").write_text("{")
    disk = runs_on_disk(cfg, out)
    assert sorted((r["method"], r["seed"]) for r in disk) == [("sft", 1), ("visurf", 1)]  # grpo: other steps/base
    mine = [_run("visurf_rollout_think", 2, 0.1, 1.0, lr=1e-4), {"method": "visurf", "seed": 1, "lr": 1e-4,
                                                                 "failed": "boom"}]
    merged = merge_runs(mine, disk)
    assert [(r["method"], r["seed"], "failed" in r) for r in merged] == [
        ("sft", 1, False), ("visurf", 1, True), ("visurf_rollout_think", 2, False)]
    results = tmp_path / "micro.json"
    base_eval = {"val": {"acc": 0.1, "format": 1.0}, "test": {"acc": 0.1, "format": 1.0}}
    first = R.write_all(results, tmp_path, cfg, tmp_path / "base-x", {**base_eval,
                        "retention": {"acc": 1.0}}, disk, {}, {}, 60.0, commit="c1", complete=True)
    assert first["invocations"] == [{"argv": [], "commit": "c1", "wall_s": 60.0, "runs": 2, "complete": True,
                                    "cpu_steal_share": None}]
    prior = prior_invocations(results, "base-x", merge_runs([_run("visurf_rollout_think", 2, 0.1, 1.0, lr=1e-4)], disk))
    assert prior == first["invocations"]
    assert prior_invocations(results, "base-y", disk) == []  # another base: a new report
    assert prior_invocations(results, "base-x", disk[:1]) == []  # runs of the old report are gone
    second = R.write_all(results, tmp_path, cfg, tmp_path / "base-x", {**base_eval,
                         "retention": {"acc": 1.0}}, disk, {}, {}, 30.0, commit="c2", complete=True,
                         invocations=prior, argv=["--only", "sft"])
    assert [c["commit"] for c in second["invocations"]] == ["c1", "c2"]
    assert "1.0 min (`reproduce_micro.sh`, 2 runs reported, commit c1) + 0.5 min (`reproduce_micro.sh --only sft`" \
        in (tmp_path / "RESULTS.md").read_text()


def test_cpu_steal_share_from_proc_stat(tmp_path):
    """The run's CPU steal (a hypervisor giving the 2 cores' time to other guests) is recorded next to its
    wall time: fields user nice system idle iowait irq softirq steal, steal = the 8th."""
    from recipe.visurf.hostload import cpu_steal, steal_share

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n")
    a = cpu_steal(stat)
    assert a == (35, 1000)
    stat.write_text("cpu  400 0 150 1000 10 0 5 435 0 0\n")
    b = cpu_steal(stat)
    assert b == (435, 2000) and steal_share(a, b) == 0.4
    assert steal_share(None, b) is None and steal_share(b, a) is None
    assert cpu_steal(tmp_path / "missing") is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_steal(stat) is None


def test_base_checksums_catch_an_altered_or_extra_file(tmp_path):
    """issue 29: the committed base is loaded only when every file matches its SHA256SUMS."""
    from recipe.visurf.micro.base import checksums, verify_checksums, write_checksums

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    write_checksums(tmp_path)
    verify_checksums(tmp_path)
    assert set(checksums(tmp_path)) == {"model.safetensors", "config.json"}
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    with pytest.raises(ValueError, match="model.safetensors"):
        verify_checksums(tmp_path)
    write_checksums(tmp_path)
    (tmp_path / "extra.txt").write_text("x")
    with pytest.raises(ValueError, match="extra.txt"):
        verify_checksums(tmp_path)


def test_first_difference_of_two_build_traces():
    """issue 29 item 1: the first record where two base builds' traces differ, with its magnitude."""
    from recipe.visurf.micro.base import divergence, first_difference

    env = {"kind": "env", "cpu_capability": "AVX2"}
    init = {"kind": "init", "params": {"w": "aa", "b": "bb"}}
    fwd = [{"kind": "forward", "module": "m", "digest": "d1", "head": [1.0, 2.0]}]
    step = {"kind": "step", "step": 1, "loss": (0.5).hex(), "grad_norm": (1.0).hex(), "params": "p", "sample": [0.1]}
    a = [env, init, *fwd, step]
    assert first_difference(a, [{**env, "cpu_capability": "DEFAULT"}, init, *fwd, step]) is None
    assert first_difference(a, [env, {"kind": "init", "params": {"w": "aa", "b": "cc"}}, *fwd, step]) == \
        {"kind": "init", "tensors": ["b"]}
    d = first_difference(a, [env, init, {**fwd[0], "digest": "d2", "head": [1.0, 2.5]}, step])
    assert d == {"kind": "forward", "module": "m", "max_abs_head": 0.5}
    later = {**step, "loss": (0.75).hex()}
    assert first_difference(a, [env, init, *fwd, later])["abs"] == 0.25
    assert first_difference(a, [env, init, *fwd, {**step, "params": "q", "sample": [0.3]}])["field"] == "params"
    assert first_difference(a, a[:-1])["kind"] == "length"
    assert divergence(a, [env, init, *fwd, later]) == [{"step": 1, "loss_abs": 0.25, "param_abs_sample": 0.0}]
