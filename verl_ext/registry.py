"""Registers the project's plug-ins with verl's registries; idempotent.

After `register_all()` (run by `import verl_ext`), plain verl config selects them:
`algorithm.adv_estimator=visurf`, `actor_rollout_ref.actor.policy_loss.loss_mode=visurf`.

Registration happens when the modules are imported (verl's decorators); Python imports a module
once, so calling this again is a no-op. (verl's `register_adv_est` raises only when a *different*
function is registered under a taken name; `register_policy_loss` overwrites silently.)
"""

from __future__ import annotations

import importlib
import importlib.util

# modules whose import registers something with verl
_PLUGIN_MODULES = ("verl_ext.visurf.advantage", "verl_ext.visurf.policy_loss")
# added by other work items; registered once they exist
_OPTIONAL_PLUGIN_MODULES = ("verl_ext.reward_manager",)


def register_all() -> None:
    """Import every plug-in module so its verl registration runs (safe to call repeatedly)."""
    for name in _PLUGIN_MODULES:
        importlib.import_module(name)
    for name in _OPTIONAL_PLUGIN_MODULES:
        if importlib.util.find_spec(name) is not None:  # only a missing module is skipped; errors propagate
            importlib.import_module(name)
