"""ViSurf entry point: ``python -m recipe.visurf.main_visurf [verl overrides]``.

Like verl's DAPO recipe: a thin Hydra entry reusing verl's ``run_ppo`` with the task runner
kept next to it (``ViSurfTaskRunner``), which builds the ViSurf trainer. Config: ``config/visurf_trainer.yaml`` (verl's
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
import ray
from omegaconf import DictConfig, OmegaConf, open_dict
from verl.trainer.main_ppo_v0 import BaseTaskRunner

import verl_ext.registry  # noqa: F401  registers the visurf estimator and policy loss (driver process)
from verl_ext import cpu
from verl_ext.coords import resolve_coords
from verl_ext.visurf.config import check_training_values, check_verl_combination, visurf_config
from verl_ext.visurf.source_check import check_data_sources

logger = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent / "config"  # read by Hydra in the driver only
# package paths, not file paths: every node of a ray cluster resolves them from its own install
REWARD_MODULE = "pkg://verl_ext.rewards"


def _user_overrides() -> set[str]:
    """Config keys set on the command line (so CPU defaults never override the user)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    except ValueError:  # not running under Hydra (called programmatically)
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in task}


def _user_set(key: str, user_keys: set[str]) -> bool:
    """Whether the user set ``key``, a config node above it or one below it (e.g.
    ``...fsdp_config.mixed_precision={param_dtype:bf16}`` covers ``...mixed_precision.param_dtype``)."""
    return any(k == key or key.startswith(k + ".") or k.startswith(key + ".") for k in user_keys)


def prepare_config(config: DictConfig, user_keys: set[str] | None = None) -> DictConfig:
    """Validate the ``visurf:`` block and resolve the recipe's derived settings in place.

    * The ``visurf:`` block is built as ``VisurfConfig`` (every value validated).
    * ViSurf on: ``rollout.n := G + 1`` (``G`` = the ``n`` the user asked for), the GT agent-loop
      manager wired in; ViSurf off: verl's ``grpo`` estimator and ``vanilla`` loss, verl's
      own agent-loop manager — i.e. plain GRPO on the same data and rewards.
    * ``VERL_USE_EXTERNAL_MODULES`` in the ray job's runtime env includes ``verl_ext.registry``,
      so verl imports it (and the plug-ins register) in every worker process — GPU runs included.
    * ``reward.custom_reward_function.path`` defaults to the project's task scorers, as a package
      path (``pkg://verl_ext.rewards``) that every node resolves from its own install — except with
      ``reward.reward_model.enable=True``: then it stays unset, so verl's reward loop scores every
      row with the reward model (``RewardLoopWorker.compute_score``: no custom function + a reward
      model -> its discriminative-RM branch); a user's function gets the model's router address.
    * ``visurf.coords``: ``auto`` becomes the actor's convention (``verl_ext.coords.resolve_coords``:
      Qwen2.5-VL ``abs840``, Qwen3-VL / Qwen3.5 ``rel1000``), the value every worker reads.
    * ``trainer.use_v1``: the recipe config sets False — the recipe runs verl's classic (v0) trainer
      (``ViSurfTaskRunner``), so the printed config says so; ``trainer.use_v1=True`` is rejected.
    * CPU (``VERL_PLATFORM=cpu``): ``verl_ext.cpu.launcher.cpu_config(name)`` for keys the user did
      not set — ``name`` the rollout the user set (``actor_rollout_ref.rollout.name=vllm``: the vLLM
      lane, ``verl_ext.cpu.vllm_cpu``), else the project's ``hf`` server — then
      ``check_cpu_config`` (settings a CPU run cannot execute, named with their fix), and ``ray_kwargs.ray_init`` with fake GPUs and the CPU env for every worker (joining
      an existing cluster, ``+ray_kwargs.ray_init.address=HOST:PORT`` or ``RAY_ADDRESS``: the env
      only — the nodes bring their own CPUs and fake GPUs, ``tests/test_two_node.py``).
    * ``check_training_values``: an lr, weight decay, clip or temperature verl would take and not train
      with (a string, a negative lr, ...), and ``rollout.n`` < 2 with ViSurf off (every advantage 0).
    * Last, with ViSurf on: ``check_verl_combination`` rejects the verl settings a ViSurf run
      cannot train correctly with (estimator, in-reward KL, batch split, ...), naming the fix.
    """
    user_keys = user_keys or set()
    enable = visurf_config(config.visurf).enable
    with open_dict(config):
        visurf = config.visurf
        # the policy's coordinate convention, resolved once here (verl_ext.coords) for every worker
        coords, how = resolve_coords(visurf_config(visurf).coords, config.actor_rollout_ref.model.get("path"))
        visurf.coords = coords
        logger.info("visurf: grounding coordinates %s (%s)", coords, how)
        rollout = config.actor_rollout_ref.rollout
        if enable:
            G = int(rollout.n)
            if G < 1:
                raise ValueError(f"actor_rollout_ref.rollout.n must be >= 1 sampled rollouts, got {G}")
            visurf.num_rollouts = G
            rollout.n = G + 1
        else:
            visurf.num_rollouts = int(rollout.n)
            rollout.agent.agent_loop_manager_class = None
            if config.algorithm.adv_estimator == "visurf":
                config.algorithm.adv_estimator = "grpo"
            if config.actor_rollout_ref.actor.policy_loss.loss_mode == "visurf":
                config.actor_rollout_ref.actor.policy_loss.loss_mode = "vanilla"
        # every ray worker imports verl_ext.registry (so the visurf estimator / loss register there
        # too) through verl's own hook, VERL_USE_EXTERNAL_MODULES, set in the job's runtime env
        runtime_env = config.ray_kwargs.ray_init.runtime_env
        if runtime_env.get("env_vars") is None:
            runtime_env.env_vars = {}
        env_vars = runtime_env.env_vars
        modules = str(env_vars.get("VERL_USE_EXTERNAL_MODULES") or os.environ.get("VERL_USE_EXTERNAL_MODULES", ""))
        modules = [m for m in modules.split(",") if m]
        if verl_ext.registry.EXTERNAL_MODULE not in modules:
            modules.append(verl_ext.registry.EXTERNAL_MODULE)
        env_vars["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
        if not config.reward.custom_reward_function.get("path") and not config.reward.reward_model.get("enable"):
            config.reward.custom_reward_function.path = REWARD_MODULE
        if config.trainer.get("use_v1"):
            raise ValueError("trainer.use_v1=True: the ViSurf recipe runs verl's classic trainer (main_ppo_v0, "
                             "RayViSurfTrainer); drop the override (the recipe config sets trainer.use_v1=False)")
        if cpu.is_enabled():
            from verl_ext.cpu.launcher import check_cpu_config, cpu_config, ray_init_config, rollout_env

            # the hf server unless the user names a rollout (verl's own default, vllm, is the GPU's)
            name = str(rollout.name) if _user_set("actor_rollout_ref.rollout.name", user_keys) else "hf"
            for key, value in cpu_config(name).items():
                if not _user_set(key, user_keys):
                    OmegaConf.update(config, key, value, force_add=True)
            check_cpu_config(config)
            ray_init = config.ray_kwargs.ray_init
            cpu_ray = ray_init_config(rollout_env(name))
            # an existing cluster (ray_init.address or RAY_ADDRESS) has its own resources: ray.init
            # refuses num_cpus / num_gpus then, and the dashboard is the cluster's
            joining = joins_cluster(config)
            for key in () if joining else ("num_cpus", "num_gpus", "include_dashboard"):
                if f"ray_kwargs.ray_init.{key}" not in user_keys and ray_init.get(key) is None:
                    ray_init[key] = cpu_ray[key]
            ray_init.runtime_env.env_vars = {**cpu_ray["runtime_env"]["env_vars"], **ray_init.runtime_env.env_vars}
    visurf_config(config.visurf)  # with num_rollouts set
    check_training_values(config, enable)
    if enable:
        check_verl_combination(config, int(config.visurf.num_rollouts))
    check_data_sources(config)  # a reward, and with ViSurf a GT, for every data_source of the data
    return config


def run_visurf(config: DictConfig, user_keys: set[str] | None = None) -> None:
    """Prepare the config and train with the ViSurf trainer (verl's ``run_ppo`` starts ray from
    ``ray_kwargs.ray_init``; on CPU that config holds the fake GPUs and the CPU env)."""
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    prepare_config(config, user_keys)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    from verl_ext.cpu.vllm_cpu import is_vllm_rollout, reclaim_shm

    runner = ray.remote(num_cpus=1)(ViSurfTaskRunner)
    if cpu.is_enabled() and is_vllm_rollout(config):
        # ray.shutdown() joining a cluster only disconnects; the segments are then still mapped and stay
        with reclaim_shm(shutdown_ray=not joins_cluster(config)):
            run_ppo(config, task_runner_class=runner)
    else:
        run_ppo(config, task_runner_class=runner)


def joins_cluster(config: DictConfig) -> bool:
    """Whether the run joins an existing ray cluster (``ray_kwargs.ray_init.address`` or ``RAY_ADDRESS``)
    instead of starting one."""
    return bool(config.ray_kwargs.ray_init.get("address") or os.environ.get("RAY_ADDRESS"))


def use_visurf_trainer() -> None:
    """THE ONE SWAP OF A verl CLASS: make verl's classic task runner build ``RayViSurfTrainer``.

    verl 0.9.1's ``TaskRunner.run`` (``verl.trainer.main_ppo_v0``) constructs the trainer as
    ``RayPPOTrainer(...)``, a global name looked up in ``main_ppo_v0`` at call time and with no
    hook to pass another class, so this rebinds that module global — in the task runner's ray
    actor process only (``ViSurfTaskRunner.run`` calls it there). ``tests/test_main_visurf.py``
    fails if a verl upgrade breaks the assumption (``run`` no longer looks the name up there).
    """
    import verl.trainer.main_ppo_v0 as main_ppo_v0

    from recipe.visurf.visurf_trainer import RayViSurfTrainer

    main_ppo_v0.RayPPOTrainer = RayViSurfTrainer


class ViSurfTaskRunner(BaseTaskRunner):
    """verl's classic ``TaskRunner`` building ``RayViSurfTrainer`` instead of ``RayPPOTrainer``
    (``use_visurf_trainer``); everything else is verl's ``TaskRunner.run``.

    Lives in an importable module (the script entry below imports ``main`` from
    ``recipe.visurf.main_visurf``, not ``__main__``): ray pickles an importable class by
    reference, so the actor runs exactly this code.
    """

    def run(self, config):
        from verl.trainer.main_ppo_v0 import TaskRunner

        use_visurf_trainer()
        return TaskRunner.__ray_metadata__.modified_class.run(self, config)


@hydra.main(config_path=str(CONFIG_DIR), config_name="visurf_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_visurf(config, _user_overrides())


if __name__ == "__main__":
    from recipe.visurf.main_visurf import main as package_main  # the importable module, not __main__

    package_main()
