"""GT injection into verl 0.9.1's rollout groups (METHOD.md §1-2, ARCHITECTURE.md "Data flow").

verl repeats every prompt ``rollout.n`` times and generates each copy through an agent loop
chosen per row by the ``agent_name`` column. With ViSurf on, the recipe runs ``n = G + 1``
and this module turns one copy per group into the ground-truth member:

* ``select_gt_rows`` (pure): the last copy of every ``uid`` whose label exists and fits.
* ``VisurfAgentLoopManager`` (``agent_loop_manager_class``): marks those rows
  ``agent_name="visurf_gt"`` with their aligned GT text, adds the ``is_gt`` column to the
  output (a batch column, so it survives verl's reordering), and runs the *group* step of
  reward control where the whole batch of ``rm_scores`` is visible: reward smoothing
  (METHOD §3.3) and ``inject_when=all_fail``. Validation batches are passed through untouched.
* ``VisurfGTAgentLoop`` (registered as ``visurf_gt`` through
  ``rollout.agent.agent_loop_config_path``): the single-turn agent loop with the sampler
  replaced by the tokenised GT + EOS, so prompt ids, images, ``multi_modal_inputs``, 3-D rope
  position ids and the per-row reward are produced by verl's own code exactly as for rollouts.

Groups whose label is missing or whose aligned GT (+EOS) exceeds ``max_response_length``
get no GT member: that copy is sampled like the others (the group holds G+1 rollouts) and
the row is counted in ``visurf_gt_skipped`` — a GT is never silently truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl_ext.constants import task_of
from verl_ext.visurf.groups import group_ids
from verl_ext.visurf.reward_control import RewardControl, smooth_gt_rewards

logger = logging.getLogger(__name__)

GT_AGENT_NAME = "visurf_gt"
INJECT_WHEN = ("always", "all_fail")

# non-tensor columns this module adds to the generation batch / output
COL_IS_GT = "is_gt"  # bool: the row is the group's GT member
COL_GT_TEXT = "visurf_gt_text"  # str: the aligned GT response ("" on other rows)
COL_GT_ACTIVE = "visurf_gt_active"  # bool: GT row taking part in its group (all_fail may drop it)
COL_GT_SCORE_RAW = "visurf_gt_score_raw"  # float: GT reward before smoothing (nan elsewhere)
COL_GT_SKIPPED = "visurf_gt_skipped"  # str: "" | "too_long" | "no_label" | "bad_label" on the would-be GT copy


# ------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------
def last_copy_per_group(uids: Sequence[Any]) -> np.ndarray:
    """Bool mask [B]: True on the last row of every ``uid`` (vectorised ``np.unique``)."""
    labels = np.asarray(uids)
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if n:
        gid = group_ids(labels)[0].numpy()
        # first occurrence in the reversed order == last occurrence in the original order
        _, first_rev = np.unique(gid[::-1], return_index=True)
        mask[n - 1 - first_rev] = True
    return mask


def select_gt_rows(uids: Sequence[Any], eligible: np.ndarray) -> np.ndarray:
    """Rows that become the GT member: the last copy of each ``uid`` where ``eligible``.

    ``eligible`` [B] bool is a per-row property of the prompt (label present, GT fits), equal
    across the copies of one group.
    """
    return last_copy_per_group(uids) & np.asarray(eligible, dtype=bool)


def gt_response_texts(
    ground_truths: Sequence[Any], data_sources: Sequence[str], control: RewardControl
) -> tuple[list[str], list[str]]:
    """Aligned GT response per row and why it is missing ("" when present).

    Returns ``(texts, reasons)``: ``reasons[i]`` is "no_label" (None / empty label) or
    "bad_label" (``align_gt`` rejected it; logged with the label) or "".
    """
    texts, reasons, errors = [], [], {}
    memo: dict[tuple[str, str], tuple[str, str]] = {}  # the G+1 copies of a prompt share the label
    for gt, source in zip(ground_truths, data_sources):
        if gt is None or (isinstance(gt, str) and not gt.strip()):
            texts.append("")
            reasons.append("no_label")
            continue
        key = (str(gt), str(source))
        if key not in memo:
            try:
                memo[key] = (control.gt_response(key[0], task_of(key[1])), "")
            except ValueError as e:
                errors.setdefault(str(e), source)
                memo[key] = ("", "bad_label")
        texts.append(memo[key][0])
        reasons.append(memo[key][1])
    if errors:  # once per batch (copies of a prompt share the label), with the distinct problems
        logger.warning("visurf: %d rows get no GT member (counted in visurf/gt_skipped_bad_label): %s",
                       reasons.count("bad_label"), "; ".join(list(errors)[:3]))
    return texts, reasons


def group_reward_step(
    scores: torch.Tensor,
    uids: Sequence[Any],
    is_gt: np.ndarray,
    smoothing: bool,
    inject_when: str,
    match_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """The group part of reward control, over a whole batch of outcome rewards.

    1. smoothing (METHOD §3.3): ``r_gt := mean(r_1..r_G)`` if ``max(m_1..m_G) >= m_gt``;
    2. ``inject_when="all_fail"``: the GT takes part only if every rollout scored below it,
       ``active_gt = is_gt & (max(m_1..m_G) < m_gt)`` (before smoothing); ``"always"``: every
       GT row is active.

    ``m`` = ``match_scores`` (default ``scores``): the rewards compared, see ``smooth_gt_rewards``.

    Args:
        scores: (bs,) outcome reward per row. uids: (bs,) group labels. is_gt: (bs,) bool.
        match_scores: (bs,) rewards used for the comparisons, or None.
    Returns:
        ``(new_scores (bs,), active_gt (bs,) bool)``.
    """
    if inject_when not in INJECT_WHEN:
        raise ValueError(f"visurf.inject_when must be one of {INJECT_WHEN}, got {inject_when!r}")
    gt = torch.as_tensor(np.asarray(is_gt, dtype=bool))
    new_scores = smooth_gt_rewards(scores, uids, gt, match_scores) if smoothing else scores.clone()
    active = gt.clone()
    if inject_when == "all_fail" and bool(gt.any()):
        gid, n_groups = group_ids(uids)
        m = (scores if match_scores is None else match_scores).to(torch.float64)
        r_max = torch.full((n_groups,), -torch.inf, dtype=torch.float64).scatter_reduce_(
            0, gid[~gt], m[~gt], reduce="amax"
        )
        active = gt & (r_max[gid] < m)
    return new_scores, active.numpy()


def match_scores_for(batch: DataProto, scores: torch.Tensor, gt_thinking_reward: str) -> torch.Tensor | None:
    """The rewards compared by smoothing / all_fail: like with like.

    ``gt_thinking_reward="zero"``: the GT's thinking-format component is 0, so every row is
    compared without it (``score - thinking_format``, the column the task scorers return) — a
    rollout that is only ahead by its format point does not "match" the GT. ``"full"``: the GT
    is credited with that point, so the full rewards compare like with like. None (full
    rewards, the literal METHOD §3.3 formula) when the column is absent (custom scorers).
    """
    if gt_thinking_reward != "zero" or "thinking_format" not in batch.non_tensor_batch:
        return None
    thinking = np.asarray(batch.non_tensor_batch["thinking_format"], dtype=np.float64)
    return scores.to(torch.float64) - torch.from_numpy(np.nan_to_num(thinking))


def set_outcome_scores(token_scores: torch.Tensor, response_mask: torch.Tensor, scores: torch.Tensor) -> None:
    """In place: make ``token_scores[i].sum() == scores[i]`` by rewriting the last valid response
    token (where verl puts outcome rewards): ``last := scores - (row sum - last)``. Exact when the
    other tokens are 0, so a smoothed GT equals the rollout mean bit for bit (Â_gt = 0 exactly).
    Rows without response tokens are left alone."""
    length = response_mask.sum(-1).long()
    rows = torch.nonzero(length > 0).flatten()
    last = length[rows] - 1
    others = token_scores[rows].sum(-1) - token_scores[rows, last]
    token_scores[rows, last] = (scores[rows].to(token_scores.dtype) - others)


# ------------------------------------------------------------------------------------------
# verl glue: agent loop + manager
# ------------------------------------------------------------------------------------------
from verl.experimental.agent_loop.agent_loop import AgentLoopManager  # noqa: E402
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402


class _GTServer:
    """Stands in for the LLM server client: answers with fixed token ids instead of sampling."""

    def __init__(self, token_ids: list[int], log_probs: list[float] | None):
        self.token_ids, self.log_probs = token_ids, log_probs

    async def generate(self, **kwargs) -> TokenOutput:
        return TokenOutput(token_ids=list(self.token_ids), log_probs=self.log_probs, stop_reason="completed")


class VisurfGTAgentLoop(SingleTurnAgentLoop):
    """Teacher-forced GT member of the group: single-turn agent loop answering with the GT.

    The GT tokens are ``tokenizer.encode(visurf_gt_text) + [eos]``. Rollout log-probs, when
    the sampled rows carry them, are placeholders (0) here; the trainer overwrites them with
    the old-policy log-probs of the same pass (``π_rollout := π_old`` on GT rows).
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        text = kwargs.get(COL_GT_TEXT) or ""
        if not text:
            raise ValueError("visurf_gt agent loop got a row without visurf_gt_text")
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        if len(ids) > self.response_length:  # the manager skips these; never truncate silently
            raise ValueError(f"GT of {len(ids)} tokens exceeds response_length {self.response_length}")
        log_probs = [0.0] * len(ids) if sampling_params.get("logprobs") else None
        sampler, self.server_manager = self.server_manager, _GTServer(ids, log_probs)
        try:
            return await super().run(sampling_params, **kwargs)
        finally:
            self.server_manager = sampler


def apply_group_step(
    batch: DataProto, uids: Sequence[Any], smoothing: bool, inject_when: str, gt_thinking_reward: str = "zero"
) -> None:
    """The group step of reward control on a generated, scored batch (in place).

    Where verl 0.9.1 first sees a whole batch of rewards: the agent-loop workers return each
    row's score as ``rm_scores`` (at its last response token). ``group_reward_step`` runs over
    the outcome rewards and the result is written back exactly (``set_outcome_scores``).
    Comparisons are like with like (``match_scores_for``). Adds the columns
    ``visurf_gt_active`` and ``visurf_gt_score_raw`` (GT reward before smoothing, nan elsewhere). Without ``rm_scores`` (a reward model scoring later) the
    batch is only annotated: every GT row active, no smoothing.
    """
    is_gt = np.asarray(batch.non_tensor_batch[COL_IS_GT], dtype=bool)
    active, raw = is_gt.copy(), np.full(len(batch), np.nan)
    if "rm_scores" in batch.batch.keys():
        token_scores = batch.batch["rm_scores"]
        scores = token_scores.sum(-1)
        raw[is_gt] = scores[torch.from_numpy(is_gt)].double().numpy()
        match = match_scores_for(batch, scores, gt_thinking_reward)
        new_scores, active = group_reward_step(scores, uids, is_gt, smoothing, inject_when, match)
        set_outcome_scores(token_scores, batch.batch["response_mask"], new_scores)
    batch.non_tensor_batch[COL_GT_ACTIVE] = active
    batch.non_tensor_batch[COL_GT_SCORE_RAW] = raw


def _column(batch: DataProto, key: str, default: Any) -> np.ndarray:
    values = batch.non_tensor_batch.get(key)
    return np.asarray(values, dtype=object) if values is not None else np.full(len(batch), default, dtype=object)


def _ground_truths(batch: DataProto) -> list[Any]:
    return [rm.get("ground_truth") if isinstance(rm, dict) else None for rm in _column(batch, "reward_model", None)]


class VisurfAgentLoopManager(AgentLoopManager):
    """verl's agent-loop manager plus GT injection and the group step of reward control."""

    def _visurf_setup(self) -> None:
        if getattr(self, "_visurf_ready", False):
            return
        from verl.utils import hf_tokenizer

        visurf = self.config.get("visurf", {})
        self.visurf_enable = bool(visurf.get("enable", True))
        self.reward_control = RewardControl.from_config(visurf)
        self.inject_when = str(visurf.get("inject_when", "always"))
        if self.inject_when not in INJECT_WHEN:
            raise ValueError(f"visurf.inject_when must be one of {INJECT_WHEN}, got {self.inject_when!r}")
        model = self.config.actor_rollout_ref.model
        self.visurf_tokenizer = hf_tokenizer(model.get("tokenizer_path") or model.path,
                                             trust_remote_code=model.get("trust_remote_code", False))
        self.response_length = int(self.config.actor_rollout_ref.rollout.response_length)
        self._warned_too_long = False
        self._visurf_ready = True

    def _mark_gt(self, prompts: DataProto) -> tuple[np.ndarray, np.ndarray]:
        uids = prompts.non_tensor_batch["uid"]
        sources = _column(prompts, "data_source", "")
        texts, reasons = gt_response_texts(_ground_truths(prompts), sources, self.reward_control)
        reasons = np.asarray(reasons, dtype=object)
        n_tokens = {t: len(self.visurf_tokenizer.encode(t, add_special_tokens=False)) for t in set(texts) if t}
        fits = np.array([bool(t) and n_tokens[t] + 1 <= self.response_length for t in texts])
        reasons[(reasons == "") & ~fits] = "too_long"
        last = last_copy_per_group(uids)
        is_gt = select_gt_rows(uids, reasons == "")
        skipped = np.where(last & (reasons != ""), reasons, "").astype(object)
        if (skipped == "too_long").any() and not self._warned_too_long:
            logger.warning("visurf: %d GT answers longer than max_response_length=%d were skipped (counted in "
                           "visurf/gt_skipped_too_long); raise data.max_response_length to train on them",
                           int((skipped == "too_long").sum()), self.response_length)
            self._warned_too_long = True
        default = self.rollout_config.agent.default_agent_loop
        names = _column(prompts, "agent_name", default)
        names[is_gt] = GT_AGENT_NAME
        prompts.non_tensor_batch["agent_name"] = names
        prompts.non_tensor_batch[COL_IS_GT] = is_gt
        prompts.non_tensor_batch[COL_GT_TEXT] = np.where(is_gt, np.asarray(texts, dtype=object), "").astype(object)
        return is_gt, skipped

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        self._visurf_setup()
        if not self.visurf_enable or prompts.meta_info.get("validate", False) or "uid" not in prompts.non_tensor_batch:
            return super().generate_sequences(prompts)
        is_gt, skipped = self._mark_gt(prompts)
        uids = prompts.non_tensor_batch["uid"]
        out = super().generate_sequences(prompts)
        if len(out) != len(prompts):
            raise RuntimeError(f"agent loops returned {len(out)} rows for {len(prompts)} prompts")
        out.non_tensor_batch[COL_IS_GT] = is_gt
        out.non_tensor_batch[COL_GT_SKIPPED] = skipped
        apply_group_step(out, uids, self.reward_control.smoothing, self.inject_when,
                         self.reward_control.gt_thinking_reward)
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
    is_gt = np.asarray(batch.non_tensor_batch.get(COL_IS_GT, np.zeros(len(batch), dtype=bool)), dtype=bool)
    if not is_gt.any():
        return 0
    uids = np.asarray(batch.non_tensor_batch["uid"])
    gid = group_ids(uids)[0].numpy()
    # one sampled row per group: the first non-GT row of each group id
    sampled = np.full(gid.max() + 1, -1)
    order = np.nonzero(~is_gt)[0]
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
