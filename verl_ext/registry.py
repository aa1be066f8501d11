"""Registers the project's plug-ins with verl's registries: importing this module is the registration.

verl imports it in every process through its own hook, ``VERL_USE_EXTERNAL_MODULES``
(``verl/__init__.py`` imports each listed module right after verl itself): the recipe puts
``verl_ext.registry`` there in the ray job's runtime env, so the driver's task runner, the
actor / rollout workers and the agent-loop workers all see the plug-ins; the entry point imports
this module itself. After that, plain verl config selects them:

* ``algorithm.adv_estimator=visurf`` — ``verl_ext.visurf.advantage`` (verl's ``register_adv_est``);
* ``actor_rollout_ref.actor.policy_loss.loss_mode=visurf`` — ``verl_ext.visurf.policy_loss``
  (verl's ``register_policy_loss``).

It also imports ``verl_ext.verl_fixes``: verl 0.9.1's Qwen2-VL input embedding fails on
text-only micro-batches with transformers 5; the fix is applied in every process that trains.

Not here, on purpose: the reward manager is selected by module path
(``reward.reward_manager.module.path=pkg://verl_ext.reward_manager``), and the GT agent loops
register themselves in the agent-loop worker processes that build
``verl_ext.visurf.gt_injection.VisurfAgentLoopWorker``. ``import verl_ext`` alone registers
nothing (so ``verl_ext.constants`` stays cheap for the data_prep CLIs and their worker pools).

Python imports a module once, so importing this again is a no-op (verl's ``register_adv_est``
raises only when a *different* function is registered under a taken name).
"""

from __future__ import annotations

import importlib

# modules whose import registers something with verl
PLUGIN_MODULES = ("verl_ext.visurf.advantage", "verl_ext.visurf.policy_loss", "verl_ext.verl_fixes")
# what the recipe adds to VERL_USE_EXTERNAL_MODULES
EXTERNAL_MODULE = __name__

for _name in PLUGIN_MODULES:
    importlib.import_module(_name)
