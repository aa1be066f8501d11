"""Three shims: the two places where verl 0.9.1 hard-codes accelerator behaviour, made CPU-safe,
and one verl bug in its 3-D position-id handling that small CPU batches hit.

Installed only by ``verl_ext.cpu.activate()`` (i.e. under ``VERL_PLATFORM=cpu``):

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``f"cpu:gloo,{device}:{backend}"``, which on the CPU platform becomes the invalid
   ``"cpu:gloo,cpu:gloo"``. On a machine without CUDA every process group is plain gloo.
2. verl's FSDP2 engine creates ``CPUOffloadPolicy(pin_memory=True)`` for the reference
   model; pinning needs an accelerator. Without CUDA the policy is created unpinned.
3. ``verl.utils.tensordict_utils.maybe_fix_3d_position_ids`` (a workaround for a tensordict
   pickling bug) unconditionally re-labels the nested 3-D ``position_ids`` as ragged in
   dim 2. When every row of a batch has the same length the nested tensor arrives laid out
   ragged in dim 1 (values ``[B*4, L]``), the re-label makes ``unbind`` fail with
   ``split_with_sizes expects split_sizes to sum exactly to L``. The fixed version reads
   the layout from the offsets instead. (Hit with small synthetic batches where all
   prompts and responses have equal length; it is a verl bug, not CPU-specific, but it is
   only patched here, under the explicit CPU switch.)
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from torch.distributed.fsdp import CPUOffloadPolicy

_MARK = "_visurf_cpu_shim"


def _gloo_init_process_group(init_process_group):
    @functools.wraps(init_process_group)
    def wrapper(*args, **kwargs):
        if not torch.cuda.is_available():
            if args:
                args = ("gloo",) + tuple(args[1:])
            else:
                kwargs["backend"] = "gloo"
        return init_process_group(*args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def _unpinned_offload_init(init):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if not torch.cuda.is_available():
            object.__setattr__(self, "pin_memory", False)

    setattr(wrapper, _MARK, True)
    return wrapper


def _fixed_maybe_fix_3d_position_ids(data) -> None:
    """Set ``position_ids._ragged_idx`` from the nested layout: 2 iff the offsets index dim 1
    of the values (``[4, sum L]``), else leave the dim-1 layout (``[B*4, L]``) alone."""
    if "position_ids" in data.keys() and data["position_ids"].dim() == 3 and data["position_ids"].is_nested:
        pos = data["position_ids"]
        total = int(pos.offsets()[-1])
        if pos.values().shape[1] == total and pos.values().shape[0] != total:
            pos._ragged_idx = 2


def install() -> None:
    """Install the shims (idempotent)."""
    if not getattr(dist.init_process_group, _MARK, False):
        dist.init_process_group = _gloo_init_process_group(dist.init_process_group)
    if not getattr(CPUOffloadPolicy.__init__, _MARK, False):
        CPUOffloadPolicy.__init__ = _unpinned_offload_init(CPUOffloadPolicy.__init__)
    from verl.utils import tensordict_utils

    # engine modules import the function by name: swap its code so every reference sees the fix
    tensordict_utils.maybe_fix_3d_position_ids.__code__ = _fixed_maybe_fix_3d_position_ids.__code__
