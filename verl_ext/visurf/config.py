"""The typed ``visurf:`` config block, its valid option values, and the start-up checks.

``recipe/visurf/config/visurf_trainer.yaml`` gives the block ``_target_:
verl_ext.visurf.config.VisurfConfig``, the way verl types its own blocks (``algorithm:`` ->
``AlgoConfig``), so every consumer builds it with verl's ``omega_conf_to_dataclass`` and reads
typed fields. ``__post_init__`` validates every value; ``check_verl_combination`` rejects the
verl settings under which a ViSurf run would silently train something else. The recipe runs both
once, in ``recipe.visurf.main_visurf.prepare_config``, before ray starts (and the dry run reuses it).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Optional

from verl.base_config import BaseConfig

from verl_ext.constants import ANSWER_TEMPLATE, GT_LOSSES, GT_THINKING_REWARDS, INJECT_WHEN, SURROGATE_LOSS_MODES
from verl_ext.coords import AUTO, check_coords
from verl_ext.visurf.gt_styles import DEFAULT_GT_STYLE, GT_LOSS_TOKENS, gt_style_names
from verl_ext.visurf.reward_control import ANSWER_FIELD, check_template, gt_response

__all__ = [
    "ANSWER_FIELD",
    "GT_LOSS_TOKENS",
    "GT_LOSSES",
    "GT_THINKING_REWARDS",
    "INJECT_WHEN",
    "SURROGATE_LOSS_MODES",
    "VisurfConfig",
    "cfg_get",
    "check_known_keys",
    "check_template",
    "check_training_values",
    "check_verl_combination",
    "visurf_config",
]

# the valid option values live in verl_ext.constants (INJECT_WHEN, GT_THINKING_REWARDS, GT_LOSSES,
# SURROGATE_LOSS_MODES: one list each) and are re-exported here; the GT styles are the modules of
# verl_ext.visurf.gt_styles (gt_style_names), GT_LOSS_TOKENS is the seam's. The answer template's
# field and check belong to GT rendering (reward_control), re-exported here: config imports
# reward_control, never the reverse.


def _one_of(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"visurf.{name} must be one of {options}, got {value!r}")


@dataclass
class VisurfConfig(BaseConfig):
    """The ``visurf:`` block: every switch of docs/METHOD.md (§1-§3, §6).

    Args:
        enable: True: ViSurf (G sampled rollouts + the GT per group, ``rollout.n = G + 1``);
            False: plain GRPO on the same data and rewards.
        inject_when: "always": every group with a usable label gets its GT member; "all_fail":
            the GT takes part only in groups where no rollout solved the task (its accuracy
            component below the task's success threshold: ``verl_ext.constants.TASK_SUCCESS_ACCURACY``
            with the recipe's own scorers, ``success_threshold`` on the reward's own scale for a custom
            reward function or a reward model, else as accurate as the GT row); elsewhere it leaves the
            group (advantage 0, no gradient).
        align: render the GT in rollout style with ``align_gt`` (§3.1); False: the stripped raw
            label inside ``gt_template`` (the "no alignment" ablation).
        gt_template: answer template wrapping the GT answer; contains ``{answer}`` once.
        gt_thinking_reward: the GT's thinking-format component (§3.2), never measured (the GT has
            no reasoning): "zero" gives it 0, "full" credits the full point. Smoothing compares
            like with like (without the component under "zero").
        smoothing: r_gt := rollout mean when a rollout matches or beats the GT (§3.3).
        gt_loss: the loss on GT rows: "ppo_clip" (the paper), "luffy_shaping" (−Â·π/(π+γ), no
            clip) or "sft" (−Â·log π); rollout rows always use the clipped surrogate.
        luffy_gamma: γ > 0 of the LUFFY shaping.
        gt_style: what the GT member answers — a module of ``verl_ext.visurf.gt_styles``:
            "template" (the paper's: the rendered GT text alone) or "rollout_think" (the think block
            of the group's best rollout that has one, as context with ``response_mask`` 0, then the
            GT text; groups without one fall back to "template").
        gt_loss_tokens: the GT tokens that train: "all" (the paper's) or "answer" (the leading
            tokens before the label — ``<answer>``, a template's think block — get ``response_mask`` 0).
        num_rollouts: G, the sampled rollouts per prompt; derived by the recipe from the user's
            ``actor_rollout_ref.rollout.n`` (None until then).
        success_threshold: ``inject_when=all_fail`` with a reward that is not the recipe's (a
            ``reward.custom_reward_function``, a reward model): a rollout solved the task when its
            ``accuracy`` (or, without that key, its reward) is >= this value, on that reward's own
            scale; None: when it is as accurate as its group's GT. The recipe's own scorers use
            ``TASK_SUCCESS_ACCURACY`` per task (``group_step.task_solved``).
        drop_bad_rows: the start-up check reads every label of ``data.train_files``; a label the
            reward or the GT renderer rejects stops the run naming file, row and data_source
            (False), or (True) the row is dropped: each such file is rewritten beside itself as
            ``<name>.visurf_clean.parquet`` without those rows, the count logged
            (``verl_ext.visurf.source_check``).
        coords: the policy's grounding coordinate convention (``verl_ext.coords``): "auto" (default:
            detected from the actor's ``config.json`` ``model_type`` at start-up and written back here —
            Qwen2.5-VL "abs840", Qwen3-VL / Qwen3.5 "rel1000"), "abs840" (absolute pixels of the 840
            frame, the paper's) or "rel1000" (relative, 0-1000). Used by the GT renderer and the rewards
            (the labels stay in the 840 frame); the data's declared convention must match (start-up check).
            Applies with ``enable=False`` (GRPO) too.
    """

    enable: bool = True
    inject_when: str = "always"
    align: bool = True
    gt_template: str = ANSWER_TEMPLATE
    gt_thinking_reward: str = "zero"
    smoothing: bool = True
    gt_loss: str = "ppo_clip"
    luffy_gamma: float = 0.1
    num_rollouts: Optional[int] = None
    gt_style: str = DEFAULT_GT_STYLE
    gt_loss_tokens: str = "all"
    success_threshold: Optional[float] = None
    drop_bad_rows: bool = False
    coords: str = AUTO
    _target_: str = "verl_ext.visurf.config.VisurfConfig"

    def __post_init__(self):
        for name in ("enable", "align", "smoothing", "drop_bad_rows"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"visurf.{name} must be True or False, got {getattr(self, name)!r}")
        _one_of("inject_when", self.inject_when, INJECT_WHEN)
        _one_of("gt_thinking_reward", self.gt_thinking_reward, GT_THINKING_REWARDS)
        _one_of("gt_loss", self.gt_loss, GT_LOSSES)
        _one_of("gt_style", self.gt_style, gt_style_names())
        _one_of("gt_loss_tokens", self.gt_loss_tokens, GT_LOSS_TOKENS)
        check_template(self.gt_template)
        check_coords(self.coords, "visurf.coords", allow_auto=True)
        gamma = self.luffy_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"visurf.luffy_gamma must be a number > 0, got {gamma!r}")
        if self.num_rollouts is not None and (isinstance(self.num_rollouts, bool) or self.num_rollouts < 1):
            raise ValueError(f"visurf.num_rollouts (G) must be >= 1, got {self.num_rollouts!r}")
        t = self.success_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t != t):
            raise ValueError(f"visurf.success_threshold must be a number or null, got {t!r}")

    @property
    def resolved_coords(self) -> str:
        """``coords``, with "auto" (a block the recipe's start-up did not resolve) as the paper's default."""
        from verl_ext.coords import DEFAULT_COORDS

        return DEFAULT_COORDS if self.coords == AUTO else self.coords

    def gt_response(self, ground_truth: Any, task: str) -> str:
        """The GT response text for a label under these switches (``reward_control.gt_response``)."""
        return gt_response(ground_truth, task, align=self.align, template=self.gt_template,
                           coords=self.resolved_coords)


def visurf_config(node: Any = None) -> VisurfConfig:
    """The typed block from the ``visurf:`` node (DictConfig / dict / VisurfConfig; None: defaults),
    through verl's ``omega_conf_to_dataclass`` as verl builds its own typed blocks."""
    if isinstance(node, VisurfConfig):
        return node
    from omegaconf import DictConfig, OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    if node is None:
        return VisurfConfig()
    if isinstance(node, DictConfig):  # resolve interpolations against the whole config first
        node = OmegaConf.to_container(node, resolve=True)
    check_known_keys(node)
    return omega_conf_to_dataclass(node, VisurfConfig)


def check_known_keys(block: Any) -> None:
    """ValueError naming every key of the ``visurf:`` block that is not a ``VisurfConfig`` field (a
    typo added with ``+visurf.smoothng=True``, which Hydra accepts; without ``+`` Hydra refuses it)."""
    from dataclasses import fields

    known = [f.name for f in fields(VisurfConfig) if f.name != "_target_"]
    unknown = sorted(str(k) for k in (block or {}) if k not in known and k != "_target_")
    if unknown:
        close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hints = "; ".join(f"visurf.{k}" + (f" (did you mean visurf.{close[k][0]}?)" if close[k] else "")
                          for k in unknown)
        raise ValueError(f"unknown visurf setting(s): {hints}. The visurf: block has {', '.join(known)}")


# the optimiser / sampling values verl takes untyped: (key, rule, test); a bad one would fail (or
# silently train nothing) only on the GPUs
TRAINING_VALUES = (
    ("actor_rollout_ref.actor.optim.lr", "a number > 0 (0 trains nothing)", lambda v: v > 0),
    ("actor_rollout_ref.actor.optim.weight_decay", "a number >= 0", lambda v: v >= 0),
    ("actor_rollout_ref.actor.optim.clip_grad", "a number > 0 (gradient-norm clipping)", lambda v: v > 0),
    ("actor_rollout_ref.rollout.temperature", "a number >= 0 (the sampling temperature)", lambda v: v >= 0),
)


def check_training_values(config: Any, enable: bool) -> None:
    """ValueError for an optimiser / sampling value verl would accept and not train with
    (``TRAINING_VALUES``: not a finite number, a negative lr or temperature, ...), and for
    ``rollout.n`` < 2 with ViSurf off: GRPO normalises each reward within its group of n rollouts,
    so with one rollout every advantage is 0 (ViSurf's group has the GT as a second member)."""
    from omegaconf import OmegaConf

    for key, rule, ok in TRAINING_VALUES:
        value = OmegaConf.select(config, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"{key} must be {rule}, got {value!r}")
    n = OmegaConf.select(config, "actor_rollout_ref.rollout.n", default=None)
    if not enable and n is not None and int(n) < 2:
        raise ValueError(f"actor_rollout_ref.rollout.n={n} with visurf.enable=False: GRPO compares each rollout "
                         "with the others of its group, so with one rollout every advantage is 0 and nothing "
                         "trains; set actor_rollout_ref.rollout.n >= 2")


def cfg_get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config.a.b.c`` for ``dotted="a.b.c"`` on a dict / DictConfig; ``default`` when any level
    is missing or the value is None."""
    node = config
    for key in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(key)
    return default if node is None else node


def check_verl_combination(config: Any, num_rollouts: int) -> None:
    """The verl settings a ViSurf run (``visurf.enable=True``) cannot train correctly with.

    ValueError naming the setting and what to change, for:

    * ``algorithm.adv_estimator`` other than ``visurf``: e.g. ``grpo`` gives a GT that
      ``inject_when=all_fail`` switched off (alone in its group) Â = r − 0, the largest advantage
      in the batch;
    * ``algorithm.use_kl_in_reward=True``: the KL penalty moves every row's reward after
      smoothing, so a smoothed GT no longer has Â_gt = 0;
    * the generation batch, ``(data.gen_batch_size or data.train_batch_size) × (G+1)`` rows (verl's
      train dataloader yields ``gen_batch_size`` prompts when set, ``ray_trainer._create_dataloader``),
      not divisible by ``actor_rollout_ref.rollout.agent.num_workers`` (verl's ``AgentLoopManager``
      splits it with ``DataProto.chunk``, which asserts an even split);
    * rollout-correction bypass mode (π_old := sampler log-probs; GT rows are teacher-forced and
      have none);
    * a colocated reward model scoring after generation (smoothing and all_fail run on the rewards
      the agent loops return);
    * a reward model with the recipe's own reward function (``pkg://verl_ext.rewards``): verl's
      reward loop calls the custom function whenever one is set (``reward_loop.py``
      ``RewardLoopWorker.compute_score``), and the recipe's scorers never ask the model;
    * ``visurf.gt_loss`` other than ``ppo_clip`` with an ``actor.policy_loss.loss_mode`` whose
      surrogate the GT variants do not reproduce (only ``vanilla`` / ``visurf``).

    Args:
        config: the whole trainer config (DictConfig or dict).
        num_rollouts: G, sampled rollouts per prompt (the GT copy makes G + 1).
    """
    estimator = cfg_get(config, "algorithm.adv_estimator")
    if estimator != "visurf":
        raise ValueError(
            f"visurf.enable=True needs algorithm.adv_estimator=visurf, got {estimator!r}: other estimators do "
            "not treat the GT member as ViSurf does (under grpo a switched-off GT alone in its group gets "
            "A = r). Set algorithm.adv_estimator=visurf, or visurf.enable=False for plain GRPO."
        )
    if cfg_get(config, "algorithm.use_kl_in_reward", False):
        raise ValueError(
            "visurf.enable=True cannot run with algorithm.use_kl_in_reward=True: the in-reward KL penalty "
            "changes rewards after reward smoothing, so a smoothed GT no longer gets advantage 0. Set "
            "algorithm.use_kl_in_reward=False. For a KL regulariser use actor_rollout_ref.actor.use_kl_loss=True: "
            "in a ViSurf run it acts on the sampled rollouts only (not on the teacher-forced GT tokens nor on "
            "pad rows; verl_ext.visurf.policy_loss.visurf_actor_loss)."
        )
    gen_key = "data.gen_batch_size" if cfg_get(config, "data.gen_batch_size") else "data.train_batch_size"
    batch = int(cfg_get(config, gen_key, 0))
    workers = int(cfg_get(config, "actor_rollout_ref.rollout.agent.num_workers", 1))
    rows = batch * (num_rollouts + 1)
    if workers < 1 or rows % workers:
        divisors = [d for d in range(1, min(rows, 64) + 1) if rows % d == 0]
        raise ValueError(
            f"visurf.enable=True generates {gen_key} x (G+1) = {batch} x {num_rollouts + 1} = {rows} "
            f"rows per step, which verl cannot split evenly over actor_rollout_ref.rollout.agent.num_workers="
            f"{workers} agent-loop workers. Set actor_rollout_ref.rollout.agent.num_workers to a divisor of "
            f"{rows} (e.g. {divisors[-3:]}) or change {gen_key}."
        )
    if cfg_get(config, "algorithm.rollout_correction.bypass_mode", False):
        raise ValueError("visurf.enable=True cannot run with algorithm.rollout_correction.bypass_mode=True: "
                         "GT rows are teacher-forced and have no sampler log-probs to use as pi_old. "
                         "Set algorithm.rollout_correction.bypass_mode=False.")
    if cfg_get(config, "reward.reward_model.enable", False) and not cfg_get(config, "reward.reward_model.enable_resource_pool",
                                                                     False):
        raise ValueError("visurf.enable=True with reward.reward_model.enable=True needs "
                         "reward.reward_model.enable_resource_pool=True: smoothing and all_fail run on the "
                         "rewards the agent loops return, before verl's colocated reward pass")
    custom = cfg_get(config, "reward.custom_reward_function.path")
    if cfg_get(config, "reward.reward_model.enable", False) and custom:
        from verl_ext.visurf.source_check import is_recipe_reward

        if is_recipe_reward(str(custom)):
            raise ValueError(
                f"reward.reward_model.enable=True with reward.custom_reward_function.path={custom!r}, the recipe's "
                "rule scorers: verl calls the custom function for every row and the recipe's scorers never ask the "
                "reward model, so it would be loaded and never used. Either leave reward.custom_reward_function.path "
                "unset (every row, the GT included, is scored by the reward model: verl's discriminative-RM path), "
                "or set it to your function taking reward_router_address= / reward_model_tokenizer= keywords "
                "(verl's convention; the recipe's reward manager passes them) to combine the model with rules.")
    gt_loss = cfg_get(config, "visurf.gt_loss", "ppo_clip")
    loss_mode = cfg_get(config, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla")
    if gt_loss != "ppo_clip" and loss_mode not in SURROGATE_LOSS_MODES:
        raise ValueError(
            f"visurf.gt_loss={gt_loss!r} replaces the clipped surrogate; it cannot be combined with "
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r}. Set the loss_mode to one of "
            f"{SURROGATE_LOSS_MODES}, or visurf.gt_loss=ppo_clip."
        )
