"""The recipe on a two-node ray cluster (issue 20): what users who outgrow one machine run.

Two ray nodes on this machine (ray's own ``ray.cluster_utils.Cluster``: a head with the fake GPU
the CPU actor needs, and a second node with CPUs only), the driver started from another working
directory and joining the cluster (``+ray_kwargs.ray_init.address``). verl places its agent-loop
and reward-loop workers round-robin over the nodes (``agent_loop.py`` ``_init_agent_loop_workers``,
``reward_loop.py`` ``_init_reward_loop_workers``), so with two of each, one of each runs on the
second node: that node generates half of every batch (GT rows included) and scores rows; the
GT agent loops register there from the worker class itself (no config file on that node).
Asserts the GT rows and the ``visurf/*`` metrics as the one-node test (``test_e2e_recipe.py``) does.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from conftest import assert_ok, run_recipe

pytestmark = pytest.mark.e2e
PROMPTS, G = 4, 2


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # an empty value makes ray refuse fake GPUs
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 8, "num_gpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=8, num_gpus=0)
    cluster.wait_for_nodes()
    try:
        yield cluster, second.node_id
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        if saved is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def test_two_steps_on_two_nodes(tmp_path, tiny_model_dir, grounding_data, two_nodes):
    import ray
    from ray._private.state import actors

    cluster, second = two_nodes
    workdir = tmp_path / "elsewhere"  # the driver's cwd: not the checkout
    run = run_recipe(workdir, tiny_model_dir, grounding_data, f"+ray_kwargs.ray_init.address={cluster.address}",
                     "actor_rollout_ref.rollout.agent.num_workers=2", "reward.num_workers=2", steps=2)
    assert_ok(run)
    assert os.getcwd() != str(workdir)

    for step in (1, 2):
        m = run.step(step)
        assert m["visurf/gt_injected"] + m["visurf/gt_skipped_too_long"] == PROMPTS
        assert m["visurf/gt_rows_checked"] == m["visurf/gt_injected"] >= 1
        for key in ("visurf/gt_reward_before_smoothing", "visurf/gt_advantage_mean", "visurf/gt_signal_share",
                    "visurf/rollout_reward_mean", "visurf/rollout_entropy", "visurf/rollout_probs_diff_max"):
            assert key in m, key
        rows = run.rollouts[step]
        assert len(rows) == PROMPTS * (G + 1)
        per_group = Counter(r["uid"].split("/")[0] for r in rows if r["is_gt"])
        assert sum(per_group.values()) == m["visurf/gt_injected"] and set(per_group.values()) == {1}

    ray.init(address=cluster.address)
    try:
        placed = [(a["ActorClassName"], a["Address"]["NodeID"]) for a in actors().values()]
    finally:
        ray.shutdown()
    on_second = {name for name, node in placed if node == second}
    assert any("AgentLoopWorker" in name for name in on_second), placed
    assert any("RewardLoopWorker" in name for name in on_second), placed
