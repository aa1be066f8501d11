"""verl on CPU, through verl's own extension points (tests, CI and the CPU demo).

verl 0.9.1 has no CPU backend. This package adds one without touching verl's sources:

* ``platform.PlatformCPU`` — registered with ``verl.plugin.platform.PlatformRegistry`` as
  ``"cpu"`` and selected by ``VERL_PLATFORM=cpu`` (gloo, a ``torch.cpu`` device module with
  the few cuda-like calls verl makes, no pinned memory).
* ``hf_rollout`` — an HF-transformers rollout registered as ``rollout.name=hf``: a replica
  and a ray actor server implementing verl's token-in/token-out ``generate`` with images
  (the complete model inputs of ``verl_ext.model_inputs``: pixel values, ``image_grid_thw``
  and ``mm_token_type_ids``, so HF builds the same 3-D rope positions as verl's actor),
  concurrent requests batched, weight sync from the trainer after every step, and vision
  special tokens never sampled.
* ``shims`` — three: the two places where verl hard-codes accelerator behaviour (duplicate
  ``cpu:gloo,cpu:gloo`` process-group backend; ``CPUOffloadPolicy(pin_memory=True)``) and
  verl's ``maybe_fix_3d_position_ids``, which mislabels the nested 3-D position ids of a batch
  whose rows all have one length (a verl bug, patched only under the CPU switch).
* ``launcher`` — starts ray with the (fake) GPU resources verl's resource pools ask for and
  carries the environment to every ray worker, plus the verl overrides CPU runs need.

Activation is explicit: this package only activates when ``VERL_PLATFORM=cpu`` is set.
verl imports it in every process (driver and ray workers) through its official
``VERL_USE_EXTERNAL_MODULES=verl_ext.cpu`` hook, which the launcher sets. On a GPU machine
neither variable is set and nothing here is imported.
"""

from __future__ import annotations

import os

ENV_SWITCH = "VERL_PLATFORM"
MODULE = "verl_ext.cpu"


def is_enabled() -> bool:
    """True when the explicit CPU switch (``VERL_PLATFORM=cpu``) is set."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() == "cpu"


_ACTIVE = False


def activate() -> None:
    """Register the CPU platform, the ``hf`` rollout and the shims (idempotent)."""
    global _ACTIVE
    if _ACTIVE:
        return
    from verl_ext.cpu import hf_rollout, platform, shims

    platform.register()
    shims.install()
    hf_rollout.register()
    _ACTIVE = True


if is_enabled():
    activate()
