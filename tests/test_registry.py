"""Registration through verl's own plug-in hook (``VERL_USE_EXTERNAL_MODULES``), no import hooks."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

import verl_ext.registry
from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
from verl_ext.visurf.policy_loss import compute_policy_loss_visurf

REPO = Path(__file__).resolve().parents[1]


def test_verl_lookups_return_our_callables():
    assert get_adv_estimator_fn("visurf") is compute_visurf_outcome_advantage
    assert get_policy_loss_fn("visurf") is compute_policy_loss_visurf


def test_registration_is_idempotent():
    importlib.reload(verl_ext.registry)  # re-imports the plug-in modules: already imported, no-op
    assert get_adv_estimator_fn("visurf") is compute_visurf_outcome_advantage
    assert get_policy_loss_fn("visurf") is compute_policy_loss_visurf


def test_verl_imports_the_registry_from_its_env_hook():
    # what every ray worker does: verl/__init__ imports VERL_USE_EXTERNAL_MODULES after itself
    code = (
        "import sys, verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        "assert get_adv_estimator_fn('visurf').__module__ == 'verl_ext.visurf.advantage'\n"
        "assert get_policy_loss_fn('visurf').__module__ == 'verl_ext.visurf.policy_loss'\n"
        "assert 'verl_ext.cpu' not in sys.modules and 'verl_ext.tiny' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "VERL_USE_EXTERNAL_MODULES": verl_ext.registry.EXTERNAL_MODULE}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_importing_the_package_registers_nothing_and_hooks_nothing():
    # no sys.meta_path import hook; `import verl_ext` / verl_ext.constants load neither verl nor torch
    code = (
        "import sys; hooks = list(sys.meta_path)\n"
        "import verl_ext, verl_ext.constants\n"
        "assert sys.meta_path == hooks\n"
        "assert 'verl' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "import verl\n"
        "from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY\n"
        "assert 'visurf' not in ADV_ESTIMATOR_REGISTRY\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_reward_manager_is_not_written_into_verls_registry():
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

    import verl_ext.reward_manager  # noqa: F401

    assert "visurf" not in REWARD_MANAGER and "ViSurfRewardManager" not in REWARD_MANAGER


def test_any_module_can_be_a_workers_first_import():
    """A ray worker's first import of ours may come before verl's (the agent-loop worker class
    unpickles gt_injection, a reward worker loads reward_manager by path); verl then imports the
    registry from its env hook halfway through. No import cycle may break that."""
    code = (
        "import importlib, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "assert get_adv_estimator_fn('visurf').__module__ == 'verl_ext.visurf.advantage'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "VERL_USE_EXTERNAL_MODULES": verl_ext.registry.EXTERNAL_MODULE}
    for first in ("verl_ext.visurf.gt_injection", "verl_ext.visurf.config", "verl_ext.reward_manager"):
        subprocess.run([sys.executable, "-c", code, first], check=True, timeout=120, env=env)
