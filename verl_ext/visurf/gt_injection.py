"""GT injection into verl 0.9.1's rollout groups (docs/METHOD.md §1-2, docs/ARCHITECTURE.md, "Data flow of one training step").

verl repeats every prompt ``rollout.n`` times and generates each copy through an agent loop
chosen per row by the ``agent_name`` column. With ViSurf on, the recipe runs ``n = G + 1``
and this module turns one copy per group into the ground-truth member:

* ``VisurfAgentLoopManager`` (``agent_loop_manager_class``): picks the GT copy of every group
  (``group_step.gt_copy_roles``), marks it ``agent_name="visurf_gt"`` with its aligned GT text,
  adds the ``is_gt`` column to the output (a batch column, so it survives verl's reordering),
  builds the GT rows in the configured GT style once every rollout is done and scored
  (``gt_styles.build_gt_rows``, e.g. ``rollout_think``: a rollout's think block then the GT answer;
  rows whose tokens changed are rescored by verl's reward workers), and runs the group step of
  reward control (``group_step.apply_group_step``: smoothing, ``inject_when=all_fail``) where the
  whole batch of ``rm_scores`` is first visible.
  Validation batches are passed through untouched.
* ``VisurfGTAgentLoop`` (verl agent loop ``visurf_gt``): the single-turn agent loop with the
  sampler replaced by the tokenised GT + EOS, so prompt ids, images, ``multi_modal_inputs``,
  3-D rope position ids and the per-row reward are produced by verl's own code exactly as for
  rollouts. ``VisurfPadAgentLoop`` (``visurf_pad``): the same with EOS only.
* ``VisurfAgentLoopWorker``: verl's worker, defined here so that every agent-loop worker
  process imports this module and with it the two agent loops (verl's ``register``): no
  config file path has to exist on the worker's node.

Groups whose label is missing or whose aligned GT (+EOS) exceeds ``max_response_length``
get no GT member, and keep G sampled rollouts like a GRPO group (equal sampling cost): their
extra copy is a *pad row* (``IS_PAD``) answered with EOS only, never sampled, in a group of
its own (advantage 0, no gradient). The skip is counted in ``visurf/gt_skipped_<reason>`` — a
GT is never silently truncated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch

from verl_ext.rewards.labels import is_missing, label_key
from verl_ext.visurf import columns as C
from verl_ext.visurf.config import VisurfConfig, visurf_config
from verl_ext.visurf.group_step import apply_group_step, group_ids, gt_copy_roles, row_mask
from verl_ext.visurf.gt_styles import build_gt_rows
from verl_ext.visurf.reward_control import label_start, render_gt

logger = logging.getLogger(__name__)

GT_AGENT_NAME = "visurf_gt"  # the verl agent loop answering with the GT
PAD_AGENT_NAME = "visurf_pad"  # the verl agent loop answering with EOS only (groups without a GT)


# ------------------------------------------------------------------------------------------
# Label rendering per batch
# ------------------------------------------------------------------------------------------
def gt_response_texts(
    ground_truths: Sequence[Any], data_sources: Sequence[str], control: VisurfConfig
) -> tuple[list[str], list[str]]:
    """Aligned GT response per row and why it is missing ("" when present).

    Every label form the scorer accepts (JSON string, list / numpy array of objects, dict,
    number) is rendered (``reward_control.render_gt``: ``align_gt`` for the project's sources,
    ``visurf.gt_template`` around the label for any other source).

    Returns ``(texts, reasons)``: ``reasons[i]`` is "no_label" (None / NaN / blank label) or
    "bad_label" (the renderer rejected it; logged with the label) or "".
    """
    texts, reasons, errors = [], [], {}
    memo: dict[tuple, tuple[str, str]] = {}  # the G+1 copies of a prompt share the label
    for gt, source in zip(ground_truths, data_sources):
        if is_missing(gt):
            texts.append("")
            reasons.append("no_label")
            continue
        key = (label_key(gt), str(source))
        if key not in memo:
            try:
                memo[key] = (render_gt(gt, str(source), align=control.align, template=control.gt_template,
                                          coords=control.resolved_coords), "")
            except ValueError as e:
                errors.setdefault(str(e), source)
                memo[key] = ("", "bad_label")
        texts.append(memo[key][0])
        reasons.append(memo[key][1])
    if errors:  # once per batch (copies of a prompt share the label), with the distinct problems
        logger.warning("visurf: %d rows get no GT member (counted in visurf/gt_skipped_bad_label): %s",
                       reasons.count("bad_label"), "; ".join(list(errors)[:3]))
    return texts, reasons


def sources_without_gt(data_sources: Sequence[str], reasons: Sequence[str]) -> list[str]:
    """Data sources none of whose rows got a GT text because every label was rejected
    (``reasons == "bad_label"`` on all of that source's rows), sorted. A whole source without
    its GT member is a configuration error (wrong label format or ``gt_template``), never a
    per-row skip: the manager raises on it the first time it sees the source."""
    src = np.asarray(data_sources, dtype=object).astype(str)
    bad = np.asarray(reasons, dtype=object) == "bad_label"
    if not bad.any():
        return []
    names, inverse = np.unique(src, return_inverse=True)
    all_bad = np.bincount(inverse, weights=bad, minlength=len(names)) == np.bincount(inverse, minlength=len(names))
    return sorted(names[all_bad].tolist())


# ------------------------------------------------------------------------------------------
# verl glue: agent loop + manager
# ------------------------------------------------------------------------------------------
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorker, register  # noqa: E402
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402


class _GTServer:
    """Stands in for the LLM server client: answers with fixed token ids instead of sampling."""

    def __init__(self, token_ids: list[int], log_probs: list[float] | None):
        self.token_ids, self.log_probs = token_ids, log_probs

    async def generate(self, **kwargs) -> TokenOutput:
        return TokenOutput(token_ids=list(self.token_ids), log_probs=self.log_probs, stop_reason="completed")


@register(GT_AGENT_NAME)
class VisurfGTAgentLoop(SingleTurnAgentLoop):
    """Teacher-forced GT member of the group: single-turn agent loop answering with the GT.

    The GT tokens are ``tokenizer.encode(visurf_gt_text) + [eos]``. Rollout log-probs, when
    the sampled rows carry them, are placeholders (0) here; the trainer overwrites them with
    the old-policy log-probs of the same pass (``π_rollout := π_old`` on GT rows).
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        text = kwargs.get(C.GT_TEXT) or ""
        if not text:
            raise ValueError("visurf_gt agent loop got a row without visurf_gt_text")
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        if len(ids) > self.response_length:  # the manager skips these; never truncate silently
            raise ValueError(f"GT of {len(ids)} tokens exceeds response_length {self.response_length}")
        log_probs = [0.0] * len(ids) if sampling_params.get("logprobs") else None
        await _after_sampled_requests(self.server_manager)
        sampler, self.server_manager = self.server_manager, _GTServer(ids, log_probs)
        try:
            return await super().run(sampling_params, **kwargs)
        finally:
            self.server_manager = sampler


def _column(batch: DataProto, key: str, default: Any) -> np.ndarray:
    values = batch.non_tensor_batch.get(key)
    return np.asarray(values, dtype=object) if values is not None else np.full(len(batch), default, dtype=object)


def _ground_truths(batch: DataProto) -> list[Any]:
    return [rm.get("ground_truth") if isinstance(rm, dict) else None for rm in _column(batch, "reward_model", None)]


@register(PAD_AGENT_NAME)
class VisurfPadAgentLoop(SingleTurnAgentLoop):
    """The extra copy of a group without a GT member (no label, bad label, GT too long): answered
    with EOS alone instead of being sampled, so the group keeps G sampled rollouts as in GRPO.
    The trainer moves the row to a group of its own (advantage 0, no gradient)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        ids = [self.tokenizer.eos_token_id]
        log_probs = [0.0] if sampling_params.get("logprobs") else None
        await _after_sampled_requests(self.server_manager)
        sampler, self.server_manager = self.server_manager, _GTServer(ids, log_probs)
        try:
            return await super().run(sampling_params, **kwargs)
        finally:
            self.server_manager = sampler


class _SentCountdown:
    """Set once ``n`` sampled requests entered the LLM client (``arrive`` per request)."""

    def __init__(self, n: int):
        self.left, self.event = n, asyncio.Event()
        if n <= 0:
            self.event.set()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


SENT_WAIT_S = 5.0  # the wait is for speed only: a sampled row's loop that never calls the server cannot hang the GT


async def _after_sampled_requests(client) -> None:
    """GT / pad rows do their (CPU) work after the batch's sampled requests were sent (at most
    ``SENT_WAIT_S`` later): otherwise it runs between those sends on the worker's event loop and
    the rollout server, which batches what has arrived, starts on part of them (bench/README.md)."""
    countdown = getattr(client, "visurf_sent", None)
    if countdown is not None:
        try:
            await asyncio.wait_for(countdown.event.wait(), SENT_WAIT_S)
        except asyncio.TimeoutError:
            pass


class VisurfAgentLoopWorker(AgentLoopWorker):
    """verl's agent-loop worker; ray imports this module in the worker process to build it, which
    registers ``visurf_gt`` / ``visurf_pad`` there (verl's agent-loop ``register``). Per batch it
    counts the sampled requests entering the LLM client, so GT / pad rows can wait for them all."""

    async def generate_sequences(self, batch: DataProto) -> DataProto:
        names = batch.non_tensor_batch.get("agent_name")
        n = len(batch) if names is None else int((~np.isin(np.asarray(names, dtype=str), [GT_AGENT_NAME, PAD_AGENT_NAME])).sum())
        client = self.llm_client
        if not getattr(client, "visurf_counting", False):
            generate = client.generate

            async def counting_generate(*args, **kwargs):
                client.visurf_sent.arrive()
                return await generate(*args, **kwargs)

            client.generate, client.visurf_counting = counting_generate, True
        client.visurf_sent = _SentCountdown(n)
        return await super().generate_sequences(batch)


def worker_tokenizer(model_config: Any):
    """The tokenizer exactly as verl's agent-loop workers build it: ``HFModelConfig`` from the
    ``actor_rollout_ref.model`` node (verl's ``omega_conf_to_dataclass``), i.e. ``copy_to_local``
    of ``model.tokenizer_path`` / ``model.path`` (hdfs:// paths, ``use_shm``) then ``hf_tokenizer``
    — so the manager's GT-length pre-check counts the tokens the GT agent loop will produce."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    return omega_conf_to_dataclass(model_config, HFModelConfig).tokenizer


class VisurfAgentLoopManager(AgentLoopManager):
    """verl's agent-loop manager plus GT injection and the group step of reward control."""

    agent_loop_workers_class = ray.remote(VisurfAgentLoopWorker)  # verl's hook for a worker subclass

    def _visurf_setup(self) -> None:
        if getattr(self, "_visurf_ready", False):
            return
        self.visurf = visurf_config(self.config.get("visurf"))
        self.visurf_tokenizer = worker_tokenizer(self.config.actor_rollout_ref.model)
        self.response_length = int(self.config.actor_rollout_ref.rollout.response_length)
        self._warned_too_long = False
        # all_fail on the reward's own scale: the task table's thresholds only for the recipe's scorers
        from verl_ext.visurf.source_check import is_recipe_reward

        custom = self.config.reward.custom_reward_function.get("path")
        self.visurf_task_thresholds = bool(custom) and is_recipe_reward(str(custom))
        self._visurf_ready = True

    def _mark_gt(self, prompts: DataProto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        uids = prompts.non_tensor_batch["uid"]
        sources = _column(prompts, "data_source", "")
        ground_truths = _ground_truths(prompts)
        texts, reasons = gt_response_texts(ground_truths, sources, self.visurf)
        self._fail_on_sources_without_gt(sources, ground_truths, reasons)
        reasons = np.asarray(reasons, dtype=object)
        n_tokens = {t: len(self.visurf_tokenizer.encode(t, add_special_tokens=False)) for t in set(texts) if t}
        fits = np.array([bool(t) and n_tokens[t] + 1 <= self.response_length for t in texts])
        reasons[(reasons == "") & ~fits] = "too_long"
        is_gt, is_pad, skipped = gt_copy_roles(uids, reasons)  # no usable GT: a pad row, not sampled
        if (skipped == "too_long").any() and not self._warned_too_long:
            logger.warning("visurf: %d GT answers longer than max_response_length=%d were skipped (counted in "
                           "visurf/gt_skipped_too_long); raise data.max_response_length to train on them",
                           int((skipped == "too_long").sum()), self.response_length)
            self._warned_too_long = True
        default = self.rollout_config.agent.default_agent_loop
        names = _column(prompts, "agent_name", default)
        names[is_gt] = GT_AGENT_NAME
        names[is_pad] = PAD_AGENT_NAME
        prompts.non_tensor_batch["agent_name"] = names
        prompts.non_tensor_batch[C.IS_GT] = is_gt
        prompts.non_tensor_batch[C.IS_PAD] = is_pad
        prompts.non_tensor_batch[C.GT_TEXT] = np.where(is_gt, np.asarray(texts, dtype=object), "").astype(object)
        return is_gt, is_pad, skipped

    def _fail_on_sources_without_gt(self, sources, ground_truths, reasons) -> None:
        """Raise the first time a data_source is seen whose every row's label was rejected
        (``sources_without_gt``): otherwise that source would silently train as plain GRPO."""
        seen = self.__dict__.setdefault("_visurf_sources_seen", set())
        failing = [s for s in sources_without_gt(sources, reasons) if s not in seen]
        seen.update(str(s) for s in sources)
        if failing:
            source = failing[0]
            gt = next(g for g, s in zip(ground_truths, sources) if str(s) == source)
            try:
                render_gt(gt, source, align=self.visurf.align, template=self.visurf.gt_template,
                          coords=self.visurf.resolved_coords)
                why = "?"
            except ValueError as e:
                why = str(e)
            raise ValueError(
                f"visurf: no row of data_source {', '.join(map(repr, failing))} gets its GT member: every label "
                f"in the batch was rejected ({why}). Fix the labels (reward_model.ground_truth) or "
                f"visurf.gt_template / visurf.align; the run would otherwise be plain GRPO on this source")

    def _build_gt_rows(self, out: DataProto, prompts: DataProto) -> None:
        """The GT style's rows (``gt_styles.build_gt_rows``: ``visurf.gt_style``, ``visurf.gt_loss_tokens``)
        once every rollout of the batch is done and scored; GT rows whose tokens changed are rescored
        by verl's reward workers exactly as the agent loops score a trajectory."""
        changed = build_gt_rows(
            out, prompts.non_tensor_batch["uid"], prompts.non_tensor_batch[C.GT_TEXT], style=self.visurf.gt_style,
            loss_tokens=self.visurf.gt_loss_tokens, label_start=label_start(self.visurf.gt_template),
            tokenizer=self.visurf_tokenizer)
        if len(changed) and "rm_scores" in out.batch.keys():
            self._rescore(out, prompts, changed)

    def _rescore(self, out: DataProto, prompts: DataProto, rows: np.ndarray) -> None:
        """Score ``rows`` of ``out`` again with verl's reward-loop workers (``compute_score_batch``, the
        call verl's ``RewardLoopManager.compute_rm_score`` makes): the rows' tensors from ``out``, their
        non-tensor columns (data_source, reward_model, extra_info, is_gt, ...) from ``prompts``, as
        verl's agent loop sends them. ``rm_scores`` gets the new score at the last valid response
        token (verl's ``_postprocess``), ``reward_extra_info`` columns the new values."""
        handles = self.reward_loop_worker_handles
        if not handles:
            raise RuntimeError("visurf.gt_style rewrote GT rows but verl gave the agent-loop manager no reward "
                               "workers to rescore them")
        keys = ("prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids")
        sub = DataProto.from_dict(tensors={k: out.batch[k][torch.from_numpy(rows)] for k in keys},
                                  non_tensors={k: v[rows] for k, v in prompts.non_tensor_batch.items()})
        parts = [p for p in np.array_split(np.arange(len(rows)), min(len(handles), len(rows))) if len(p)]
        results = [r for chunk in ray.get([h.compute_score_batch.remote(sub.select_idxs(p))
                                           for h, p in zip(handles, parts)]) for r in chunk]
        rm = out.batch["rm_scores"]
        R = rm.shape[-1]
        idx = torch.from_numpy(rows)
        last = out.batch["attention_mask"][idx, -R:].sum(-1) - 1
        rm[idx] = 0
        rm[idx, last] = torch.tensor([r["reward_score"] for r in results], dtype=rm.dtype)
        for key in out.meta_info.get("reward_extra_keys", []):
            column = out.non_tensor_batch[key]
            if column.dtype.kind in "US":  # fixed-width strings would truncate longer values
                column = out.non_tensor_batch[key] = column.astype(object)
            column[rows] = [r["reward_extra_info"][key] for r in results]

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        self._visurf_setup()
        if not self.visurf.enable or prompts.meta_info.get("validate", False) or "uid" not in prompts.non_tensor_batch:
            return super().generate_sequences(prompts)
        is_gt, is_pad, skipped = self._mark_gt(prompts)
        out = super().generate_sequences(prompts)
        if len(out) != len(prompts):
            raise RuntimeError(f"agent loops returned {len(out)} rows for {len(prompts)} prompts")
        out.non_tensor_batch[C.IS_GT] = is_gt
        out.non_tensor_batch[C.IS_PAD] = is_pad
        out.non_tensor_batch[C.GT_SKIPPED] = skipped
        self._build_gt_rows(out, prompts)
        apply_group_step(out, prompts.non_tensor_batch["uid"], self.visurf.smoothing, self.visurf.inject_when,
                         self.visurf.gt_thinking_reward, self.visurf.success_threshold, self.visurf_task_thresholds)
        return out


def check_gt_rows(batch: DataProto) -> int:
    """Check every GT row against a sampled row of its group; returns the number checked.

    The GT row must share the prompt with its group (``prompts``, prompt ``attention_mask``,
    prompt ``position_ids`` — 3-D rope for Qwen2.5-VL — and every ``multi_modal_inputs``
    tensor), and its response position ids must continue the prompt exactly like a rollout's
    (equal over the common valid length). A mismatch means the GT would be trained on another
    image or prompt, so it raises ``RuntimeError`` naming the group. Groups without a sampled
    row (G = 0) are skipped.
    """
    is_gt = row_mask(batch, C.IS_GT)
    if not is_gt.any():
        return 0
    uids = np.asarray(batch.non_tensor_batch["uid"])
    gid = group_ids(uids)[0].numpy()
    # one sampled row per group: the first row of each group id that is neither the GT nor a pad row
    pad = row_mask(batch, C.IS_PAD)
    sampled = np.full(gid.max() + 1, -1)
    order = np.nonzero(~is_gt & ~pad)[0]
    sampled[gid[order[::-1]]] = order[::-1]
    prompts, attn, pos = batch.batch["prompts"], batch.batch["attention_mask"], batch.batch["position_ids"]
    resp_mask = batch.batch["response_mask"]
    P = prompts.shape[-1]
    mm = batch.non_tensor_batch.get("multi_modal_inputs")
    checked = 0
    for g in np.nonzero(is_gt)[0]:
        r = sampled[gid[g]]
        if r < 0:
            continue
        n = int(min(resp_mask[g].sum(), resp_mask[r].sum()))
        problems = []
        if not torch.equal(prompts[g], prompts[r]) or not torch.equal(attn[g, :P], attn[r, :P]):
            problems.append("prompt ids / mask")
        if not torch.equal(pos[g][..., : P + n], pos[r][..., : P + n]):
            problems.append("position ids")
        if mm is not None:
            a, b = mm[g] or {}, mm[r] or {}
            if a.keys() != b.keys() or any(
                isinstance(a[k], torch.Tensor) and not torch.equal(a[k], b[k]) for k in a
            ):
                problems.append("multi_modal_inputs")
        if problems:
            raise RuntimeError(f"visurf: GT row {g} of group {uids[g]!r} differs from its rollouts in: "
                               f"{', '.join(problems)}")
        checked += 1
    return checked
