"""ViSurf entry point: ``python -m recipe.visurf.main_visurf [verl overrides]``.

Like verl's DAPO recipe: a thin Hydra entry reusing verl's ``run_ppo`` with a task runner
that builds the ViSurf trainer. Config: ``config/visurf_trainer.yaml`` (verl's
``ppo_trainer`` + the ``visurf:`` block). Users give ``actor_rollout_ref.rollout.n=G`` as for
GRPO; with ``visurf.enable=True`` the run uses ``n = G + 1`` (the extra copy per prompt is the
GT member), which the printed config shows. ``visurf.enable=False`` is plain GRPO.
With ``VERL_PLATFORM=cpu`` the run goes through ``verl_ext.cpu`` (tests, the CPU demo).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import verl_ext  # noqa: F401  registers the visurf estimator, policy loss and reward manager
from verl_ext import cpu

logger = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "config"
REWARD_MODULE = Path(verl_ext.__file__).parent / "rewards" / "__init__.py"


def _user_overrides() -> set[str]:
    """Config keys set on the command line (so CPU defaults never override the user)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    except ValueError:  # not running under Hydra (called programmatically)
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in task}


def check_visurf_config(visurf: DictConfig) -> None:
    """Validate the ``visurf:`` block before anything starts (ValueError naming the key)."""
    from verl_ext.visurf.gt_injection import INJECT_WHEN
    from verl_ext.visurf.policy_loss import GT_LOSSES
    from verl_ext.visurf.reward_control import RewardControl

    if not isinstance(visurf.enable, bool):
        raise ValueError(f"visurf.enable must be True or False, got {visurf.enable!r}")
    if visurf.inject_when not in INJECT_WHEN:
        raise ValueError(f"visurf.inject_when must be one of {INJECT_WHEN}, got {visurf.inject_when!r}")
    if visurf.gt_loss not in GT_LOSSES:
        raise ValueError(f"visurf.gt_loss must be one of {GT_LOSSES}, got {visurf.gt_loss!r}")
    if isinstance(visurf.luffy_gamma, bool) or not isinstance(visurf.luffy_gamma, (int, float)) \
            or not visurf.luffy_gamma > 0:
        raise ValueError(f"visurf.luffy_gamma must be a number > 0, got {visurf.luffy_gamma!r}")
    RewardControl.from_config(visurf)  # align, gt_template, gt_thinking_reward, smoothing


def check_verl_combination(config: DictConfig) -> None:
    """verl settings under which GT rows would be handled wrongly (ValueError naming them).

    * rollout-correction bypass mode uses the sampler's log-probs as π_old; GT rows have none
      (teacher-forced), so ρ on them would be meaningless;
    * a reward model scoring after generation (``reward_model.enable`` without its own resource
      pool): the group step (smoothing, all_fail) runs on the rewards the agent loops return.
    """
    if OmegaConf.select(config, "algorithm.rollout_correction.bypass_mode", default=False):
        raise ValueError("visurf.enable=True cannot run with algorithm.rollout_correction.bypass_mode=True: "
                         "GT rows are teacher-forced and have no sampler log-probs to use as pi_old")
    rm = config.reward.reward_model
    if rm.get("enable") and not rm.get("enable_resource_pool"):
        raise ValueError("visurf.enable=True with reward.reward_model.enable=True needs "
                         "reward.reward_model.enable_resource_pool=True: smoothing and all_fail run on the "
                         "rewards the agent loops return, before verl's colocated reward pass")


def prepare_config(config: DictConfig, user_keys: set[str] | None = None) -> DictConfig:
    """Validate the ``visurf:`` block and resolve the recipe's derived settings in place.

    * ViSurf on: ``rollout.n := G + 1`` (``G`` = the ``n`` the user asked for), GT agent loop
      and manager wired in; ViSurf off: verl's ``grpo`` estimator and ``vanilla`` loss, verl's
      own agent-loop manager — i.e. plain GRPO on the same data and rewards.
    * ``VERL_USE_EXTERNAL_MODULES`` in the ray job's runtime env includes ``verl_ext``, so verl
      imports it (and the plug-ins register) in every worker process — GPU runs included.
    * ``reward.custom_reward_function.path`` defaults to the project's task scorers.
    * CPU (``VERL_PLATFORM=cpu``): ``verl_ext.cpu.launcher.CPU_CONFIG`` for keys the user did
      not set, and ``ray_kwargs.ray_init`` with fake GPUs and the CPU env for every worker.
    """
    user_keys = user_keys or set()
    check_visurf_config(config.visurf)
    if config.visurf.enable:
        check_verl_combination(config)
    with open_dict(config):
        visurf = config.visurf
        rollout = config.actor_rollout_ref.rollout
        if visurf.enable:
            G = int(rollout.n)
            if G < 1:
                raise ValueError(f"actor_rollout_ref.rollout.n must be >= 1 sampled rollouts, got {G}")
            visurf.num_rollouts = G
            rollout.n = G + 1
            if not rollout.agent.get("agent_loop_config_path"):
                rollout.agent.agent_loop_config_path = str(CONFIG_DIR / "agent_loops.yaml")
        else:
            visurf.num_rollouts = int(rollout.n)
            rollout.agent.agent_loop_manager_class = None
            if config.algorithm.adv_estimator == "visurf":
                config.algorithm.adv_estimator = "grpo"
            if config.actor_rollout_ref.actor.policy_loss.loss_mode == "visurf":
                config.actor_rollout_ref.actor.policy_loss.loss_mode = "vanilla"
        # every ray worker imports verl_ext (so the visurf estimator / loss register there too)
        # through verl's own hook, VERL_USE_EXTERNAL_MODULES, set in the job's runtime env
        runtime_env = config.ray_kwargs.ray_init.runtime_env
        if runtime_env.get("env_vars") is None:
            runtime_env.env_vars = {}
        env_vars = runtime_env.env_vars
        modules = str(env_vars.get("VERL_USE_EXTERNAL_MODULES") or os.environ.get("VERL_USE_EXTERNAL_MODULES", ""))
        modules = [m for m in modules.split(",") if m]
        if not any(m == "verl_ext" or m.startswith("verl_ext.") for m in modules):
            modules.append("verl_ext")
        env_vars["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
        if not config.reward.custom_reward_function.get("path"):
            config.reward.custom_reward_function.path = str(REWARD_MODULE)
        if cpu.is_enabled():
            from verl_ext.cpu.launcher import CPU_CONFIG, ray_init_config

            for key, value in CPU_CONFIG.items():
                if key not in user_keys:
                    OmegaConf.update(config, key, value, force_add=True)
            ray_init = config.ray_kwargs.ray_init
            cpu_ray = ray_init_config()
            for key in ("num_cpus", "num_gpus", "include_dashboard"):
                if f"ray_kwargs.ray_init.{key}" not in user_keys and ray_init.get(key) is None:
                    ray_init[key] = cpu_ray[key]
            ray_init.runtime_env.env_vars = {**cpu_ray["runtime_env"]["env_vars"], **ray_init.runtime_env.env_vars}
    return config


def run_visurf(config: DictConfig, user_keys: set[str] | None = None) -> None:
    """Prepare the config and train with the ViSurf trainer (verl's ``run_ppo`` starts ray from
    ``ray_kwargs.ray_init``; on CPU that config holds the fake GPUs and the CPU env)."""
    import ray
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from recipe.visurf.visurf_trainer import ViSurfTaskRunner

    prepare_config(config, user_keys)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(ViSurfTaskRunner))


@hydra.main(config_path="config", config_name="visurf_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_visurf(config, _user_overrides())


if __name__ == "__main__":
    main()
