"""prepare_config: what the recipe derives from a user's config before verl starts; the task
runner's one swap of a verl class; package-relative paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    assert config.actor_rollout_ref.rollout.agent.get("agent_loop_config_path") is None  # registered by the worker
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class.endswith("VisurfAgentLoopManager")
    # every ray worker imports verl_ext.registry (GPU runs included): the plug-ins register there too
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_ext.registry"
    assert config.reward.custom_reward_function.path == "pkg://verl_ext.rewards"
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
    # issue 12 item 2: each names the fix
    (["algorithm.adv_estimator=grpo"], "needs algorithm.adv_estimator=visurf, got 'grpo'.*Set algorithm.adv_estimator=visurf"),
    (["algorithm.use_kl_in_reward=True"], "use_kl_in_reward=True.*Set algorithm.use_kl_in_reward=False"),
    (["data.train_batch_size=4", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.agent.num_workers=8"],
     "4 x 3 = 12 rows.*num_workers=8.*Set actor_rollout_ref.rollout.agent.num_workers to a divisor of 12"),
    (["visurf.gt_loss=sft", "actor_rollout_ref.actor.policy_loss.loss_mode=gspo"],
     "gt_loss='sft' replaces the clipped surrogate.*loss_mode='gspo'"),
    (["visurf.smoothing=maybe"], "smoothing"),
    # values verl takes untyped and would not train with; a typo Hydra accepts with "+"
    (["visurf.enable=False", "actor_rollout_ref.rollout.n=1"],
     r"rollout.n=1 with visurf.enable=False: .*every advantage is 0.*set actor_rollout_ref.rollout.n >= 2"),
    (["actor_rollout_ref.actor.optim.lr=-1"], r"optim.lr must be a number > 0 \(0 trains nothing\), got -1$"),
    (["actor_rollout_ref.actor.optim.lr=0"], r"optim.lr must be a number > 0"),
    (["actor_rollout_ref.actor.optim.lr=nan"], r"optim.lr must be a number > 0"),
    (["actor_rollout_ref.actor.optim.lr=fast"], r"optim.lr must be a number > 0 .*got 'fast'"),
    (["actor_rollout_ref.rollout.temperature=-1"], r"rollout.temperature must be a number >= 0 .*got -1"),
    (["actor_rollout_ref.actor.optim.weight_decay=-0.1"], r"optim.weight_decay must be a number >= 0"),
    (["actor_rollout_ref.actor.optim.clip_grad=0"], r"optim.clip_grad must be a number > 0"),
    (["+visurf.smoothng=True"], r"unknown visurf setting\(s\): visurf.smoothng \(did you mean visurf.smoothing\?\)"),
    (["+visurf.flavour=1", "+visurf.aling=False"],  # no visurf key is close to "flavour": no suggestion
     r"visurf.aling \(did you mean visurf.align\?\); visurf.flavour. The visurf: block has enable, inject_when"),
])
def test_bad_settings_fail_before_anything_starts(monkeypatch, overrides, message):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    with pytest.raises(ValueError, match=message):
        prepare_config(compose_rl(overrides))


def test_valid_batch_split_and_grpo_settings_pass(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    ok = ["data.train_batch_size=16", "actor_rollout_ref.rollout.n=8", "actor_rollout_ref.rollout.agent.num_workers=8"]
    assert prepare_config(compose_rl(ok)).actor_rollout_ref.rollout.n == 9  # 16 x 9 = 144 rows, 18 per worker
    # ViSurf off is plain GRPO: the ViSurf-only checks do not apply
    grpo = prepare_config(compose_rl(["visurf.enable=False", "algorithm.adv_estimator=grpo",
                                      "algorithm.use_kl_in_reward=True", "data.train_batch_size=4"]))
    assert grpo.algorithm.adv_estimator == "grpo"
    # the edges of the value rules: ViSurf with G = 1 (the GT is the second member), greedy sampling,
    # no weight decay
    edge = prepare_config(compose_rl(["actor_rollout_ref.rollout.n=1", "actor_rollout_ref.rollout.temperature=0",
                                      "actor_rollout_ref.actor.optim.weight_decay=0", "data.train_batch_size=4"]))
    assert edge.actor_rollout_ref.rollout.n == 2


# --------------------------------------------------------------------------------------------
# the one swap of a verl class (trainer), documented in main_visurf.use_visurf_trainer
# --------------------------------------------------------------------------------------------
def test_trainer_swap_still_reaches_verls_task_runner():
    """Fails when a verl upgrade breaks the swap: verl's classic TaskRunner.run must still build
    the trainer through the module-global name RayPPOTrainer of verl.trainer.main_ppo_v0."""
    import verl.trainer.main_ppo_v0 as main_ppo_v0
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    from recipe.visurf.main_visurf import ViSurfTaskRunner, use_visurf_trainer
    from recipe.visurf.visurf_trainer import RayViSurfTrainer

    import inspect

    run = inspect.unwrap(main_ppo_v0.TaskRunner.__ray_metadata__.modified_class.run)  # ray's tracing wrapper
    assert "RayPPOTrainer" in run.__code__.co_names  # a global lookup at call time, not a bound default
    assert run.__globals__ is vars(main_ppo_v0)  # ... in the module use_visurf_trainer rebinds
    assert issubclass(ViSurfTaskRunner, main_ppo_v0.BaseTaskRunner)
    original = main_ppo_v0.RayPPOTrainer
    assert original is RayPPOTrainer and issubclass(RayViSurfTrainer, original)
    try:
        use_visurf_trainer()
        assert main_ppo_v0.RayPPOTrainer is RayViSurfTrainer
    finally:
        main_ppo_v0.RayPPOTrainer = original


# --------------------------------------------------------------------------------------------
# issue 12 item 7: nothing a worker node needs is a path of the driver's checkout
# --------------------------------------------------------------------------------------------
def test_config_has_no_checkout_paths_and_resolves_from_another_cwd(tmp_path):
    """From a directory outside the checkout: the prepared config names no file under the
    checkout, and what the workers load from it (reward function, agent loops, manager) resolves
    through the installed package."""
    repo = Path(__file__).resolve().parents[1]
    code = f"""
import os
from omegaconf import OmegaConf
from recipe.visurf.dry_run import compose_rl
from recipe.visurf.main_visurf import prepare_config
os.environ.pop("VERL_PLATFORM", None)
config = OmegaConf.to_yaml(prepare_config(compose_rl(["actor_rollout_ref.rollout.n=2"])))
assert {str(repo)!r} not in config, [l for l in config.splitlines() if {str(repo)!r} in l]
from verl.utils.import_utils import load_extern_object
from verl.trainer.ppo.reward import get_custom_reward_fn
cfg = prepare_config(compose_rl([]))
assert get_custom_reward_fn(cfg) is not None
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.utils.import_utils import load_class_from_fqn
manager = load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class)
assert {{"visurf_gt", "visurf_pad"}} <= set(_agent_loop_registry), sorted(_agent_loop_registry)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    env.pop("VERL_PLATFORM", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
