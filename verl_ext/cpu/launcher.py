"""Start verl on CPU: the environment every process needs, ray with fake GPUs, the overrides.

verl schedules its workers on ``GPU`` resources and reads a few environment variables in
every ray worker. ``prepare_env()`` sets them in this process (call it before verl is
imported, or set them in the shell as the example scripts do); ``init_ray()`` starts a
local ray whose runtime env carries them to every worker; ``CPU_CONFIG`` is the verl
config a CPU run needs (the recipe's entry point applies them in CPU mode).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Environment for the driver and every ray worker on a CPU run.
CPU_ENV: dict[str, str] = {
    "VERL_PLATFORM": "cpu",  # selects verl_ext.cpu.platform.PlatformCPU (the explicit switch)
    "VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu",  # verl imports it in every process
    "VERL_ENGINE_DEVICE": "cuda",  # picks verl's FSDP engine class (registered for cuda/npu only)
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",  # 2 cores shared by trainer, rollout server and agent loops
}

# verl config a CPU run needs (no flash-attn, FSDP2 on CPU params, the hf rollout, the classic
# trainer, one agent-loop / reward worker: on 2 cores more workers only add start-up time).
CPU_CONFIG: dict[str, object] = {
    "trainer.use_v1": False,
    "actor_rollout_ref.rollout.name": "hf",
    "actor_rollout_ref.model.use_remove_padding": False,
    "actor_rollout_ref.model.enable_gradient_checkpointing": False,
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.ref.strategy": "fsdp2",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    "actor_rollout_ref.rollout.agent.num_workers": 1,
    "reward.num_workers": 1,
    "trainer.n_gpus_per_node": 1,
    "trainer.nnodes": 1,
}


def cpu_overrides() -> list[str]:
    """``CPU_CONFIG`` as Hydra command-line overrides (for verl's own ``main_ppo``)."""
    out = []
    for key, value in CPU_CONFIG.items():
        text = str(value) if not isinstance(value, bool) else ("True" if value else "False")
        out.append(("+" if key.endswith("attn_implementation") else "") + f"{key}={text}")
    return out


def prepare_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``CPU_ENV`` (+ ``extra``) in ``os.environ`` where not already set; returns the env
    to forward to ray workers (also carries ``PYTHONPATH`` with the repo root)."""
    for key, value in {**CPU_ENV, **(extra or {})}.items():
        os.environ.setdefault(key, value)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    forward = set(CPU_ENV) | set(extra or {}) | {"PYTHONPATH", "VERL_LOGGING_LEVEL", "VERL_FILE_LOGGER_PATH",
                                                 "VERL_FILE_LOGGER_ROOT"}
    return {k: os.environ[k] for k in sorted(forward) if k in os.environ}


def init_ray(num_cpus: int | None = None, fake_gpus: int = 1, tmp_dir: str | None = None) -> None:
    """Start a local ray with ``fake_gpus`` GPU resources and the CPU env in its runtime env.

    ``num_cpus`` logical CPUs (default 8: verl's actors each ask for one; the machine's real
    cores are shared). Does nothing if ray is already initialised.
    """
    import ray

    if ray.is_initialized():
        return
    env = prepare_env()
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # an empty value makes ray refuse fake GPUs
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    runtime_env = get_ppo_ray_runtime_env()
    runtime_env["env_vars"].update(env)
    ray.init(
        num_cpus=num_cpus or int(os.environ.get("VISURF_RAY_CPUS", "8")),
        num_gpus=fake_gpus,
        include_dashboard=False,
        runtime_env=runtime_env,
        _temp_dir=tmp_dir or os.environ.get("VISURF_RAY_TMP"),
        log_to_driver=os.environ.get("VISURF_RAY_LOG_TO_DRIVER", "1") == "1",
    )
