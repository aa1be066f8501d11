"""Per-phase wall times of the recipe's hooks, in every process of a run (``bench_step.py --phases``).

Imported by verl in every process (``VERL_USE_EXTERNAL_MODULES``, verl's plug-in hook), it wraps the
functions below with a timer and appends one JSON line per call to ``$VISURF_PHASE_LOG``
(``{"name", "pid", "t0", "s", ...}``); nothing is wrapped when that variable is unset. The wrapped
functions are the recipe's hooks and the verl calls they sit around, so a ViSurf and a GRPO run
can be compared phase by phase:

* trainer process: ``AgentLoopManager.generate_sequences`` (verl; ViSurf's manager adds
  ``_mark_gt`` and the group step ``apply_group_step``), ``RayPPOTrainer._compute_old_log_prob``
  (verl's pass) and ViSurf's override with ``rollout_logprob_metrics``, ``check_gt_rows``,
  ``own_groups``; ``RayPPOTrainer._update_actor`` and the override with ``visurf_step_metrics``;
* agent-loop worker: ``SingleTurnAgentLoop.run`` per row (GT / pad rows in their own names);
* reward worker: ``ViSurfRewardManager.run_single`` per row;
* rollout server: ``HFRolloutServer.generate`` per request (arrival to answer) and ``_generate_batch``
  per batch, with its request count and width.
"""

from __future__ import annotations

import functools
import importlib.abc
import inspect
import json
import os
import sys
import time

LOG = os.environ.get("VISURF_PHASE_LOG")


def _write(record: dict) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def _wrap(owner, attr: str, name: str, extra=None) -> None:
    """Replace ``owner.attr`` with a timed copy (once); ``extra(args, kwargs)`` adds fields to the record."""
    fn = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
    if fn is None or getattr(fn, "_phase_timed", False):
        return

    def record(t0: float, args, kwargs) -> None:
        rec = {"name": name, "pid": os.getpid(), "t0": t0, "s": time.perf_counter() - t0}
        if extra is not None:
            rec.update(extra(args, kwargs))
        _write(rec)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                record(t0, args, kwargs)
    else:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                record(t0, args, kwargs)
    timed._phase_timed = True
    setattr(owner, attr, timed)


def _patch(module) -> None:
    """Wrap the timed functions that live in ``module`` (called once it is imported)."""
    name = module.__name__
    if name == "verl.experimental.agent_loop.agent_loop":
        _wrap(module.AgentLoopManager, "generate_sequences", "trainer/agent_loop_manager.generate_sequences (verl)")
    elif name == "verl.experimental.agent_loop.single_turn_agent_loop":
        _wrap(module.SingleTurnAgentLoop, "run", "agent_loop/single_turn.run (sampled row)",  # GT/pad rows run it too:
              extra=lambda args, kwargs: {"server": type(args[0].server_manager).__name__})  # told apart here
    elif name == "verl.trainer.ppo.ray_trainer":
        _wrap(module.RayPPOTrainer, "_compute_old_log_prob", "trainer/_compute_old_log_prob (verl)")
        _wrap(module.RayPPOTrainer, "_update_actor", "trainer/_update_actor (verl)")
    elif name == "verl_ext.visurf.gt_injection":
        _wrap(module.VisurfAgentLoopManager, "generate_sequences", "trainer/visurf_manager.generate_sequences")
        _wrap(module.VisurfAgentLoopManager, "_mark_gt", "trainer/visurf_manager._mark_gt")
        _wrap(module, "apply_group_step", "trainer/apply_group_step")
        _wrap(module.VisurfGTAgentLoop, "run", "agent_loop/visurf_gt.run (GT row)")
        _wrap(module.VisurfPadAgentLoop, "run", "agent_loop/visurf_pad.run (pad row)")
    elif name == "recipe.visurf.visurf_trainer":
        _wrap(module.RayViSurfTrainer, "_compute_old_log_prob", "trainer/_compute_old_log_prob (override, total)")
        _wrap(module, "rollout_logprob_metrics", "trainer/rollout_logprob_metrics")
        _wrap(module, "check_gt_rows", "trainer/check_gt_rows")
        _wrap(module, "own_groups", "trainer/own_groups")
        _wrap(module.RayViSurfTrainer, "_update_actor", "trainer/_update_actor (override, total)")
        _wrap(module, "visurf_step_metrics", "trainer/visurf_step_metrics")
    elif name == "verl_ext.reward_manager":
        _wrap(module.ViSurfRewardManager, "run_single", "reward/run_single (per row)")
    elif name == "verl_ext.cpu.hf_rollout":
        _wrap(module.HFRolloutServer, "generate", "server/generate (per request: wait + batch)")
        _wrap(module.HFRolloutServer, "_generate_batch", "server/_generate_batch",
              extra=lambda args, kwargs: {"requests": len(args[1]), "width": args[1][0].key[1]})


TARGETS = ("verl.experimental.agent_loop.agent_loop", "verl.experimental.agent_loop.single_turn_agent_loop",
           "verl.trainer.ppo.ray_trainer", "verl_ext.visurf.gt_injection", "recipe.visurf.visurf_trainer",
           "verl_ext.reward_manager", "verl_ext.cpu.hf_rollout")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches each target module right after it is first imported. Importing the targets here
    instead would run verl's import chain from inside ``import verl`` (this module is loaded by it),
    before the CPU platform is registered."""

    def find_spec(self, fullname, path, target=None):
        _retry_pending()
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_patch(module, exec_module=exec_module):
                    exec_module(module)
                    _patch(module)

                spec.loader.exec_module = exec_and_patch
                return spec
        return None


_PENDING: set[str] = set()  # targets that were mid-import when this module loaded


def _retry_pending() -> None:
    """Patch the targets that were still being imported at install time, once they are complete
    (retried on every later import)."""
    for name in list(_PENDING):
        try:
            _patch(sys.modules[name])
        except AttributeError:  # still partially initialised
            continue
        _PENDING.discard(name)


def install() -> None:
    _PENDING.update(name for name in TARGETS if name in sys.modules)
    _retry_pending()
    sys.meta_path.insert(0, _AfterImport())


if LOG:
    install()
