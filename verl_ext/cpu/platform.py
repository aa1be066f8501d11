"""The ``cpu`` platform for verl's ``PlatformRegistry`` (selected with ``VERL_PLATFORM=cpu``)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Optional

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry


def _zero(*args, **kwargs) -> int:
    return 0


def _none(*args, **kwargs) -> None:
    return None


class CPUDeviceModule:
    """``torch.cpu`` plus the cuda-style calls verl makes on its device module.

    verl calls e.g. ``get_torch_device().memory_allocated()`` / ``.manual_seed(...)`` /
    ``.get_rng_state()``; ``torch.cpu`` lacks them. Memory statistics report 0 (verl only
    logs them), rng calls map to torch's global CPU generator. Anything else is forwarded to
    ``torch.cpu`` unchanged, so ``torch.cpu`` itself is never modified.
    """

    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)
    manual_seed = staticmethod(torch.manual_seed)
    manual_seed_all = staticmethod(torch.manual_seed)
    empty_cache = staticmethod(_none)
    ipc_collect = staticmethod(_none)
    reset_peak_memory_stats = staticmethod(_none)
    memory_allocated = staticmethod(_zero)
    memory_reserved = staticmethod(_zero)
    max_memory_allocated = staticmethod(_zero)
    max_memory_reserved = staticmethod(_zero)
    max_memory_cached = staticmethod(_zero)

    @staticmethod
    def mem_get_info(*args, **kwargs) -> tuple[int, int]:
        return 0, 0

    @staticmethod
    def memory_stats(*args, **kwargs) -> dict:
        return {}

    @staticmethod
    def get_device_name(*args, **kwargs) -> str:
        return "cpu"

    @staticmethod
    def get_device_properties(*args, **kwargs):
        return SimpleNamespace(name="cpu", total_memory=0, major=None, minor=None)

    def __getattr__(self, name):
        return getattr(torch.cpu, name)


class PlatformCPU(PlatformBase):
    """CPU as a verl platform: one "device", gloo collectives, ray resource still ``GPU``.

    The ray resource name stays ``"GPU"`` because verl's resource pools request GPUs; the
    launcher starts ray with that many fake GPUs.
    """

    _device_module = CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected: only selected explicitly with VERL_PLATFORM=cpu

    def current_device(self):
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index: Optional[int] = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    @contextlib.contextmanager
    def nvtx_range(self, msg):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def cudart(self):
        return None

    def get_device_uuid(self, device_id) -> str:
        return f"CPU-{device_id}"


def register() -> None:
    """Register ``PlatformCPU`` as verl platform ``"cpu"`` (idempotent)."""
    if PlatformRegistry.get("cpu") is not PlatformCPU:
        PlatformRegistry.register(platform="cpu")(PlatformCPU)
