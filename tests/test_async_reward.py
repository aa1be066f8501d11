"""An ``async def`` ``reward.custom_reward_function`` (verl 0.9.1 allows one) is awaited.

verl loads the user's file with ``get_custom_reward_fn`` (``verl/trainer/ppo/reward.py``: an
``async def`` function comes back as ``partial(_call_with_kwargs_async, ...)``) and its own
reward managers await it on the reward worker's loop (``NaiveRewardManager.run_single``,
``verl/experimental/reward_loop/reward_manager/naive.py`` lines 30, 66-73). The ViSurf reward
manager and the start-up data-source check must do the same: without the await the score is a
coroutine (``float(coroutine)`` fails). Everything here is the real component: the reward file is
a file on disk, loaded by verl's loader, run by the manager verl's ``load_reward_manager`` builds.
"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from test_reward_manager import ByteTokenizer, make_batch

from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager
from verl_ext.reward_manager import ViSurfRewardManager, score_row
from verl_ext.visurf.source_check import check_data_sources

# A user's reward file: awaits something (asyncio.sleep) before answering, as a reward that calls
# a judge server would; the score encodes what it saw so the test can check the arguments.
ASYNC_REWARD = '''
import asyncio

async def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0.0):
    await asyncio.sleep(0)
    correct = solution_str.strip() == "A: " + str(ground_truth)
    return {"score": (2.0 if correct else 0.5) + bonus + (10.0 if extra_info["is_gt"] else 0.0),
            "saw_gt_thinking_reward": extra_info["gt_thinking_reward"]}
'''


@pytest.fixture()
def reward_file(tmp_path):
    path = tmp_path / "my_async_reward.py"
    path.write_text(ASYNC_REWARD)
    return str(path)


def _config(path, **extra):
    return OmegaConf.create({
        "reward": {"custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": {"bonus": 0.25}},
                   "reward_manager": {"source": "importlib", "name": "ViSurfRewardManager",
                                      "module": {"path": "pkg://verl_ext.reward_manager"}},
                   "sandbox_fusion": None},
        "visurf": {"gt_thinking_reward": "full", "gt_template": "A: {answer}"},
        **extra,
    })


def test_the_reward_manager_awaits_an_async_reward_function(reward_file):
    manager = load_reward_manager(_config(reward_file), ByteTokenizer())  # verl's loader and manager factory
    assert isinstance(manager, ViSurfRewardManager) and manager.is_async_reward_score
    batch = make_batch(["A: Paris", "A: Rome", "A: Paris"], ["u", "u", "u"], [False, False, True],
                       data_source="my_qa", label="Paris")
    out = [manager.loop.run_until_complete(manager.run_single(batch[i: i + 1])) for i in range(3)]
    # correct 2 + bonus 0.25 (reward_kwargs); wrong 0.5 + 0.25; the GT row: correct + 10 for is_gt
    assert [o["reward_score"] for o in out] == [2.25, 0.75, 12.25]
    assert all(type(o["reward_score"]) is float for o in out)
    assert out[2]["reward_extra_info"] == {"score": 12.25, "saw_gt_thinking_reward": "full"}


def test_score_row_runs_an_async_function_without_a_loop(reward_file):
    """The driver-side caller (the start-up check) has no event loop: ``score_row`` runs it."""
    fn = get_custom_reward_fn(_config(reward_file))
    result = score_row(fn, "my_qa", "A: 72", 72, {"index": 3}, is_gt=False, gt_thinking_reward="zero")
    assert result == {"score": 2.25, "saw_gt_thinking_reward": "zero"}


def test_the_startup_check_scores_the_gt_with_an_async_reward_function(reward_file, tmp_path):
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({
        "data_source": ["my_qa"] * 2,
        "prompt": [[{"role": "user", "content": "q"}]] * 2,
        "reward_model": [{"style": "rule", "ground_truth": "Paris"}, {"style": "rule", "ground_truth": "Rome"}],
        "extra_info": [{"index": 0}, {"index": 1}],
    }), path)
    config = _config(reward_file, data={"train_files": str(path), "val_files": [], "reward_fn_key": "data_source"})
    config.visurf.enable = True
    assert check_data_sources(config) == {"my_qa": f"reward.custom_reward_function {reward_file}:compute_score"}


def test_an_async_reward_functions_value_error_names_the_row(tmp_path):
    path = tmp_path / "bad_reward.py"
    path.write_text("async def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0):\n"
                    "    raise ValueError('label ' + json.dumps(ground_truth) + ' unreadable')\n"
                    "import json\n")
    manager = load_reward_manager(_config(str(path)), ByteTokenizer())
    batch = make_batch(["x"], ["u"], [False], data_source="my_qa", label=json.dumps([1, 2]))
    batch.non_tensor_batch["extra_info"][0] = {"id": "row-7"}
    with pytest.raises(ValueError, match=r"reward for row 'row-7' \(data_source='my_qa'.*unreadable"):
        manager.loop.run_until_complete(manager.run_single(batch[0:1]))
