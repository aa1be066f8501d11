"""prepare_config: what the recipe derives from a user's config before verl starts."""

from __future__ import annotations

import os

import pytest

from recipe.visurf.dry_run import compose_rl
from recipe.visurf.main_visurf import prepare_config


def test_visurf_on_runs_g_plus_one_and_wires_the_gt(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    config = prepare_config(compose_rl(["actor_rollout_ref.rollout.n=8"]))
    assert config.actor_rollout_ref.rollout.n == 9 and config.visurf.num_rollouts == 8
    assert config.algorithm.adv_estimator == "visurf"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "visurf"
    assert config.actor_rollout_ref.rollout.agent.agent_loop_config_path.endswith("agent_loops.yaml")
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class.endswith("VisurfAgentLoopManager")
    # every ray worker imports verl_ext (GPU runs included): the plug-ins register there too
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_ext"
    assert config.reward.custom_reward_function.path.endswith("verl_ext/rewards/__init__.py")
    assert config.ray_kwargs.ray_init.get("num_gpus") is None  # no CPU settings without the CPU switch


def test_visurf_off_is_plain_grpo(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    config = prepare_config(compose_rl(["actor_rollout_ref.rollout.n=8", "visurf.enable=False"]))
    assert config.actor_rollout_ref.rollout.n == 8
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class is None


def test_cpu_switch_applies_cpu_config_but_not_over_user_keys(monkeypatch):
    from verl_ext.cpu.launcher import CPU_ENV

    for key in [*CPU_ENV, "PYTHONPATH"]:  # prepare_env sets them in this process: restore afterwards
        present = key in os.environ
        monkeypatch.setenv(key, os.environ.get(key, ""))  # records the original (or its absence)
        if not present:
            monkeypatch.delenv(key)
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    config = prepare_config(compose_rl(["reward.num_workers=2"]), user_keys={"reward.num_workers"})
    assert config.actor_rollout_ref.rollout.name == "hf" and config.trainer.use_v1 is False
    assert config.reward.num_workers == 2  # the user's value wins
    ray_init = config.ray_kwargs.ray_init
    assert ray_init.num_gpus == 1 and ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"


@pytest.mark.parametrize("overrides, message", [
    (["visurf.inject_when=sometimes"], "inject_when"),
    (["visurf.gt_loss=dpo"], "gt_loss"),
    (["visurf.gt_thinking_reward=half"], "gt_thinking_reward"),
    (["actor_rollout_ref.rollout.n=0"], "n must be >= 1"),
    (["algorithm.rollout_correction.bypass_mode=True"], "bypass_mode"),
    (["reward.reward_model.enable=True"], "enable_resource_pool"),
])
def test_bad_settings_fail_before_anything_starts(overrides, message):
    with pytest.raises(ValueError, match=message):
        prepare_config(compose_rl(overrides))
