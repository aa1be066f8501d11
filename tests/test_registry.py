"""`import verl_ext` registers the ViSurf plug-ins with verl, idempotently."""

import importlib
import subprocess
import sys

from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

import verl_ext
from verl_ext.registry import register_all
from verl_ext.visurf.advantage import compute_visurf_outcome_advantage
from verl_ext.visurf.policy_loss import compute_policy_loss_visurf


def test_verl_lookups_return_our_callables():
    assert get_adv_estimator_fn("visurf") is compute_visurf_outcome_advantage
    assert get_policy_loss_fn("visurf") is compute_policy_loss_visurf


def test_registration_is_idempotent():
    register_all()
    register_all()
    importlib.reload(verl_ext)  # re-runs register_all() in the package __init__
    importlib.import_module("verl_ext.visurf.advantage")
    assert get_adv_estimator_fn("visurf") is compute_visurf_outcome_advantage
    assert get_policy_loss_fn("visurf") is compute_policy_loss_visurf


def test_fresh_interpreter_import_registers_without_cpu_plugin():
    code = (
        "import sys, verl_ext\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        "assert get_adv_estimator_fn('visurf').__module__ == 'verl_ext.visurf.advantage'\n"
        "assert get_policy_loss_fn('visurf').__module__ == 'verl_ext.visurf.policy_loss'\n"
        "assert 'verl_ext.cpu' not in sys.modules and 'verl_ext.tiny' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_constants_import_does_not_load_verl_or_torch():
    # data_prep CLIs and their worker pools import only the shared facts: they must stay fast
    code = (
        "import sys, verl_ext.constants\n"
        "assert 'verl' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
