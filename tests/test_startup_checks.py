"""What the start-up checks stop before ray starts, and the run-time rules they guard (issue 20).

Items: 1 reward model, 2/7 every label streamed, 3 GT length, 5 all_fail on the reward's own scale,
6 the generation batch split, 9 float64 Â_gt, a reward dict without ``score``, ``trainer.use_v1``.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from recipe.visurf.dry_run import compose_rl
from recipe.visurf.main_visurf import prepare_config
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager
from verl_ext.reward_manager import ViSurfRewardManager, score_row
from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
from verl_ext.visurf.group_step import smooth_gt_rewards, task_solved
from verl_ext.visurf.source_check import check_data_sources, scan_labels

OBJ = {"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}
GOOD = json.dumps([OBJ])


@pytest.fixture(autouse=True)
def _no_cpu_platform(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)


def _parquet(path, source, labels, row_group_size=None):
    rm_type = pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
    table = pa.table({
        "data_source": pa.array([source] * len(labels)),
        "prompt": pa.array([[{"role": "user", "content": f"q{i}"}] for i in range(len(labels))]),
        "reward_model": pa.array([{"style": "rule", "ground_truth": g} for g in labels], type=rm_type),
        "extra_info": pa.array([{"index": i} for i in range(len(labels))]),
    })
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def _config(train, model=None, response_length=None, **visurf):
    node = {
        "data": {"train_files": train, "val_files": [], "reward_fn_key": "data_source"},
        "reward": {"custom_reward_function": {"path": "pkg://verl_ext.rewards", "name": "compute_score",
                                              "reward_kwargs": {}}},
        "visurf": {"enable": True, **visurf},
    }
    if model is not None:
        node["actor_rollout_ref"] = {"model": {"path": str(model)}, "rollout": {"response_length": response_length}}
    return OmegaConf.create(node)


# --------------------------------------------------------------------------------------------
# item 2 / 7: every label of every file, streamed; an opt-in to drop bad rows
# --------------------------------------------------------------------------------------------
def test_a_bad_label_after_the_sampled_rows_stops_the_start_up_naming_file_row_and_source(tmp_path):
    """8 good rows (what the old check sampled), then a broken one at row 8: the recipe's grounding
    scorer raises on it while scoring rollouts, so it must stop the run before ray starts."""
    path = _parquet(tmp_path / "g.parquet", "refcocog", [GOOD] * 8 + ["[{broken"] + [GOOD] * 3)
    with pytest.raises(ValueError, match=r"1 of 12 rows .*g\.parquet row 8 \(data_source='refcocog'\): "
                                         r"bad grounding label.*visurf\.drop_bad_rows=True"):
        check_data_sources(_config(path))
    with pytest.raises(ValueError, match="reward for row"):  # what the reward worker would have raised
        score_row(__import__("verl_ext.rewards", fromlist=["compute_score"]).compute_score, "refcocog", "",
                  "[{broken", {}, is_gt=False, gt_thinking_reward="zero")


def test_a_missing_label_stops_the_run_for_every_recipe_scorer(tmp_path):
    """The recipe's scorers raise on a missing label (grounding and math alike: a math label None
    would read as "null" and match an answer "null"), so the start-up check names the row."""
    grounding = _parquet(tmp_path / "g.parquet", "refcocog", [GOOD] * 9 + [None])
    with pytest.raises(ValueError, match=r"row 9 \(data_source='refcocog'\): no label .*which the reward rejects"):
        check_data_sources(_config(grounding))
    math = _parquet(tmp_path / "m.parquet", "synthetic_math", ["3"] * 9 + [None])
    with pytest.raises(ValueError, match=r"row 9 \(data_source='synthetic_math'\): no label .*which the reward "
                                         r"rejects: .*no label \(None\): every row needs its answer"):
        check_data_sources(_config(math))
    config = _config(math, drop_bad_rows=True)
    assert check_data_sources(config) == {"synthetic_math": "the recipe's math scorer"}
    assert pq.read_table(config.data.train_files[0]).num_rows == 9


def test_drop_bad_rows_writes_a_copy_without_them_and_logs_the_count(tmp_path, caplog):
    labels = [GOOD] * 8 + ["[{broken", GOOD, "not json", GOOD]
    path = _parquet(tmp_path / "g.parquet", "refcocog", labels, row_group_size=5)
    config = _config([path], drop_bad_rows=True)
    with caplog.at_level("WARNING"):
        check_data_sources(config)
    clean = str(tmp_path / "g.visurf_clean.parquet")
    assert list(config.data.train_files) == [clean]
    assert "dropped 2 of the rows" in caplog.text
    kept = pq.read_table(clean)
    assert kept.num_rows == 10 and kept.schema == pq.read_schema(path)
    assert [r["index"] for r in kept.column("extra_info").to_pylist()] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 11]


def test_data_files_the_check_cannot_read_are_errors_or_named_never_silent(tmp_path, caplog):
    """A file without data_source, one verl would refuse by its name and an unreadable one stop the
    run naming the file; a JSON file or one not found here is skipped with a warning saying why."""
    import shutil

    good = _parquet(tmp_path / "good.parquet", "refcocog", [GOOD] * 2)
    pq.write_table(pq.read_table(good).drop(["data_source"]), tmp_path / "nods.parquet")
    shutil.copy(good, tmp_path / "train.data")
    (tmp_path / "torn.parquet").write_bytes(open(good, "rb").read()[:50])
    cases = {
        "nods.parquet": r"nods.parquet: no 'data_source' column \(has prompt, reward_model, extra_info\)",
        "train.data": r"train.data: verl reads data files by their name, .parquet, .json or .jsonl only",
        "torn.parquet": r"torn.parquet: not a readable parquet file",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message):
            check_data_sources(_config([good, str(tmp_path / name)]))
    (tmp_path / "rows.jsonl").write_text("{}\n")
    with caplog.at_level("WARNING", logger="visurf"):
        check_data_sources(_config([good, str(tmp_path / "rows.jsonl"), str(tmp_path / "absent.parquet")]))
    assert (f"{tmp_path / 'rows.jsonl'} (JSON: its labels are not checked at start-up); "
            f"{tmp_path / 'absent.parquet'} (not found here)") in caplog.text
    # with a reward model scoring every row, a file without the column is not the recipe's problem
    config = _config([str(tmp_path / "nods.parquet")])
    config.reward = {"reward_model": {"enable": True}, "custom_reward_function": {"path": None}}
    assert check_data_sources(config) == {}


def test_the_scan_streams_batches_of_two_columns(tmp_path):
    """The scan reads batch by batch (any batch size gives the same answer) and only the source and
    label columns; extra_info is read for the sampled rows alone."""
    labels = [GOOD] * 20 + ["[{broken"]
    path = _parquet(tmp_path / "g.parquet", "refcocog", labels, row_group_size=4)
    seen = []

    def problem(source, label):
        seen.append(label)
        return "" if label == GOOD else "bad"

    for batch_rows in (3, 4096):
        seen.clear()
        scan = scan_labels([path], "data_source", per_source=2, label_problem_fn=problem, batch_rows=batch_rows)
        assert scan.n_rows == 21 and scan.n_problems == 1 and list(scan.bad_rows[path]) == [20]
        assert scan.samples["refcocog"] == [{"ground_truth": GOOD, "extra_info": {"index": 0}},
                                            {"ground_truth": GOOD, "extra_info": {"index": 1}}]
        assert len(seen) == 21


# --------------------------------------------------------------------------------------------
# item 3: the GT's token length
# --------------------------------------------------------------------------------------------
def test_a_source_whose_every_sampled_gt_is_too_long_stops_with_the_numbers(tmp_path, tiny_model_dir):
    path = _parquet(tmp_path / "g.parquet", "refcocog", [GOOD] * 4)
    with pytest.raises(ValueError, match=r"every sampled GT of data_source 'refcocog' \(4 rows\) is longer than the "
                                         r"response length 8.*GT \+ EOS = (\d+)\.\.\1 tokens.*at least \1"):
        check_data_sources(_config(path, model=tiny_model_dir, response_length=8))
    assert check_data_sources(_config(path, model=tiny_model_dir, response_length=256))


# --------------------------------------------------------------------------------------------
# item 1: a reward model is used, or rejected naming the fix
# --------------------------------------------------------------------------------------------
RM = ["reward.reward_model.enable=True", "reward.reward_model.enable_resource_pool=True",
      "reward.reward_model.model_path=/models/rm"]


def test_a_reward_model_without_custom_function_scores_every_row():
    """verl's reward loop scores with the model when no custom function is set
    (RewardLoopWorker.compute_score, verl/experimental/reward_loop/reward_loop.py lines 145-153): the
    recipe leaves the path unset then, instead of pointing it at its rule scorers."""
    config = prepare_config(compose_rl(RM))
    assert config.reward.custom_reward_function.path is None
    assert prepare_config(compose_rl([])).reward.custom_reward_function.path == "pkg://verl_ext.rewards"


def test_a_reward_model_with_the_recipes_rule_scorers_is_rejected_naming_the_fixes():
    with pytest.raises(ValueError, match=r"reward model.*never used.*leave reward.custom_reward_function.path unset"
                                         r".*reward_router_address="):
        prepare_config(compose_rl(RM + ["reward.custom_reward_function.path=pkg://verl_ext.rewards"]))


def test_the_start_up_check_skips_the_reward_probes_when_the_model_scores(tmp_path):
    path = _parquet(tmp_path / "qa.parquet", "my_qa", ["Paris"])
    config = _config(path)
    config.reward = {"custom_reward_function": {"path": None}, "reward_model": {"enable": True}}
    assert check_data_sources(config) == {"my_qa": "the reward model"}


REWARD_FILE = '''
import asyncio

def rule(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
         reward_model_tokenizer=None):
    judged = len(reward_router_address or "") / 100  # a real function would post to the router
    return {"score": float(solution_str == ground_truth) + judged, "router": reward_router_address,
            "tokenizer": type(reward_model_tokenizer).__name__, "is_gt": extra_info["is_gt"]}

async def rule_async(**kwargs):
    await asyncio.sleep(0)
    return rule(**kwargs)
'''


class _ByteTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids if int(i) != 0).decode()


@pytest.mark.parametrize("name", ["rule", "rule_async"])
def test_the_manager_hands_the_reward_model_router_to_the_function_as_verls_managers_do(tmp_path, name):
    """verl's RewardLoopWorker builds the manager with reward_router_address / reward_model_tokenizer
    (reward_loop.py line 131) and NaiveRewardManager passes both to the function (naive.py 58-64)."""
    reward = tmp_path / "my_reward.py"
    reward.write_text(REWARD_FILE)
    config = OmegaConf.create({
        "reward": {"custom_reward_function": {"path": str(reward), "name": name, "reward_kwargs": {}},
                   "reward_manager": {"source": "importlib", "name": "ViSurfRewardManager",
                                      "module": {"path": "pkg://verl_ext.reward_manager"}},
                   "sandbox_fusion": None, "reward_model": {"enable": True}},
        "visurf": {},
    })
    manager = load_reward_manager(config, _ByteTokenizer(), reward_router_address="10.0.0.2:8000",
                                  reward_model_tokenizer=_ByteTokenizer())
    assert isinstance(manager, ViSurfRewardManager)
    resp = torch.tensor([[ord(c) for c in "Paris"]])
    batch = DataProto.from_dict(
        tensors={"prompts": torch.ones(1, 2, dtype=torch.long), "responses": resp,
                 "attention_mask": torch.ones(1, 7, dtype=torch.long)},
        non_tensors={"data_source": np.array(["my_qa"], dtype=object),
                     "reward_model": np.array([{"ground_truth": "Paris"}], dtype=object),
                     "extra_info": np.array([{}], dtype=object), "is_gt": np.array([True])})
    out = manager.loop.run_until_complete(manager.run_single(batch))
    assert out["reward_score"] == pytest.approx(1.0 + len("10.0.0.2:8000") / 100)
    info = out["reward_extra_info"]
    assert info["router"] == "10.0.0.2:8000" and info["tokenizer"] == "_ByteTokenizer" and info["is_gt"] is True


# --------------------------------------------------------------------------------------------
# item 5: all_fail on the reward's own scale
# --------------------------------------------------------------------------------------------
def test_all_fail_with_a_zero_one_custom_reward_on_a_project_source():
    """A custom 0-1 reward on refcocog: a perfect rollout (1.0) solved the task. With the grounding
    threshold (3, the recipe's own scale) it never could — the old behaviour."""
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    uids = np.array(list("aaabbb"))
    is_gt = np.array([0, 0, 1, 0, 0, 1], dtype=bool)
    sources = ["refcocog"] * 6
    assert not task_solved(scores, uids, is_gt, sources).any()  # the task table: 1.0 < 3
    solved = task_solved(scores, uids, is_gt, sources, task_thresholds=False)  # as accurate as the GT
    assert solved.tolist() == [True, False, True, False, False, True]
    solved = task_solved(scores, uids, is_gt, sources, success_threshold=0.5, task_thresholds=False)
    assert solved.tolist() == [True, False, True, False, False, True]
    accuracy = [0.9, 0.2, 1.0, 0.1, 0.4, 1.0]  # its own accuracy key wins over the score
    solved = task_solved(scores, uids, is_gt, sources, accuracy, success_threshold=0.3, task_thresholds=False)
    assert solved.tolist() == [True, False, True, False, True, True]


def test_the_agent_loop_manager_uses_the_task_table_only_for_the_recipes_scorers():
    from verl_ext.visurf.source_check import is_recipe_reward

    assert is_recipe_reward("pkg://verl_ext.rewards")
    assert not is_recipe_reward("/abs/my_reward.py")


# --------------------------------------------------------------------------------------------
# item 6: the batch the agent loop receives
# --------------------------------------------------------------------------------------------
def test_the_split_check_uses_the_generation_batch():
    """gen_batch_size 3 x (G+1 = 5) = 15 rows over 4 workers: DataProto.chunk's assert at step 1."""
    with pytest.raises(ValueError, match=r"data.gen_batch_size x \(G\+1\) = 3 x 5 = 15 rows.*num_workers=4"):
        prepare_config(compose_rl(["data.train_batch_size=4", "+data.gen_batch_size=3",
                                   "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.agent.num_workers=4"]))
    prepare_config(compose_rl(["data.train_batch_size=3", "+data.gen_batch_size=4",
                               "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.agent.num_workers=4"]))


# --------------------------------------------------------------------------------------------
# item 9
# --------------------------------------------------------------------------------------------
def test_smoothed_gt_advantage_is_exactly_zero_in_float64():
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(300):
        n = int(torch.randint(2, 9, (1,), generator=g))
        rollouts = torch.rand(n, generator=g, dtype=torch.float64) * 7
        scores = torch.cat([rollouts, rollouts.max().reshape(1) * 0.5])
        index, is_gt = np.zeros(n + 1, dtype=int), np.array([False] * n + [True])
        token = torch.zeros(n + 1, 3, dtype=torch.float64)
        token[:, -1] = smooth_gt_rewards(scores, index, is_gt)
        adv, _ = compute_visurf_outcome_advantage(token, torch.ones(n + 1, 3), index)
        worst = max(worst, abs(float(adv[-1, -1])))
        assert (adv[:-1] != 0).any()  # the rollouts keep their signal
    assert worst == 0.0


def test_a_reward_dict_without_score_names_the_problem():
    with pytest.raises(ValueError, match=r"returned a dict without the 'score' key \(keys: \['acc'\]\)"):
        score_row(lambda **kw: {"acc": 1.0}, "my_qa", "x", "y", {}, is_gt=False, gt_thinking_reward="zero")


def test_the_printed_config_says_the_v0_trainer():
    assert prepare_config(compose_rl([])).trainer.use_v1 is False
    with pytest.raises(ValueError, match="trainer.use_v1=True"):
        prepare_config(compose_rl(["trainer.use_v1=True"]))
