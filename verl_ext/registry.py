"""Registers the project's plug-ins with verl's registries; idempotent.

After `register_all()` (run by `import verl_ext`), plain verl config selects them:
`algorithm.adv_estimator=visurf`, `actor_rollout_ref.actor.policy_loss.loss_mode=visurf`.

`import verl_ext` registers at once when verl is already imported; otherwise it registers the
moment `import verl` completes (`register_on_verl_import`, a one-shot import hook). Either way
every verl lookup made after `import verl_ext` finds the plug-ins, while code that only needs
the shared facts (`verl_ext.constants`: data_prep CLIs and their worker pools) does not pay
the seconds it takes to import verl and torch.

Registration happens when the modules are imported (verl's decorators); Python imports a module
once, so calling this again is a no-op. (verl's `register_adv_est` raises only when a *different*
function is registered under a taken name; `register_policy_loss` overwrites silently.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

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


class _RegisterAfterVerl(importlib.abc.MetaPathFinder):
    """One-shot import hook: lets ``verl`` load as usual, then runs ``register_all()``.

    Triggered by the top-level package only, after ``verl/__init__`` has fully run, so the
    registration imports verl's submodules from a clean state (the same point at which verl's
    own ``VERL_USE_EXTERNAL_MODULES`` hook imports plug-ins)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "verl":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        register_all()


def register_on_verl_import() -> None:
    """Run ``register_all()`` as soon as ``verl`` is imported (now, if it already is)."""
    if "verl" in sys.modules:
        register_all()
    elif not any(isinstance(f, _RegisterAfterVerl) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterVerl())
