"""The group step of ViSurf: pure functions over a batch of rows grouped by verl's ``uid``.

Which copy of a prompt becomes the GT member, reward smoothing (docs/METHOD.md §3.3),
``inject_when=all_fail``, the rewards compared like with like, and the exact rewrite of the
outcome rewards. No verl agent-loop code here (that glue is ``verl_ext.visurf.gt_injection``);
``group_reward_step`` (run on a batch by ``apply_group_step``) is the one caller of
``smooth_gt_rewards``.

All functions are vectorised over the batch (dense group ids, ``index_add`` /
``scatter_reduce``), never a Python loop over rows, and independent of row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl_ext.constants import DATA_SOURCE_TASK, INJECT_WHEN, TASK_SUCCESS_ACCURACY
from verl_ext.visurf import columns as C

__all__ = [
    "all_fail_active",
    "apply_group_step",
    "group_ids",
    "group_reward_step",
    "gt_copy_roles",
    "last_copy_per_group",
    "match_scores_for",
    "own_groups",
    "row_mask",
    "select_gt_rows",
    "set_outcome_scores",
    "smooth_gt_rewards",
    "task_solved",
]


def group_ids(index: Any, device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """Map group labels (verl's `uid`: numpy array / list / tensor of str or int) to dense ids.

    Args:
        index: `(np.ndarray | list | torch.Tensor)` shape (bs,), one group label per row.
        device: device of the returned tensor (default cpu).

    Returns:
        gid: `(torch.LongTensor)` shape (bs,), values in 0..n_groups-1 (sorted label order).
        n_groups: `(int)` number of distinct labels.
    """
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    labels = np.asarray(index)
    if labels.ndim != 1:
        raise ValueError(f"index must be 1-D (one group label per row), got shape {labels.shape}")
    try:
        uniq, inverse = np.unique(labels, return_inverse=True)
    except TypeError:  # mixed label types (e.g. str and int in one object array): compare as str
        uniq, inverse = np.unique(labels.astype(str), return_inverse=True)
    gid = torch.from_numpy(inverse.reshape(-1).astype(np.int64, copy=False))
    return gid.to(device) if device is not None else gid, len(uniq)


def own_groups(uids: Sequence[Any], leave: np.ndarray) -> np.ndarray:
    """``uids`` with the rows in ``leave`` moved to a one-member group each (``uid + OWN_GROUP_SUFFIX``):
    the ``visurf`` estimator gives a one-member group Â = 0, and the row no longer counts in its
    former group's statistics."""
    out = np.asarray(uids).astype(object).copy()
    leave = np.asarray(leave, dtype=bool)
    if leave.any():
        out[leave] = np.char.add(out[leave].astype(str), C.OWN_GROUP_SUFFIX).astype(object)
    return out


# ------------------------------------------------------------------------------------------
# Which copy becomes the GT member
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


def gt_copy_roles(uids: Sequence[Any], skip_reasons: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the extra (last) copy of every group becomes: the GT member, or — when the group has
    no usable GT (``skip_reasons`` non-empty: no label, bad label, too long) — a pad row.

    A pad row is answered with EOS only, never sampled, and put in a group of its own (Â = 0), so
    every group holds exactly G sampled rollouts, as a GRPO group does at the same sampling cost.

    Args:
        uids: (bs,) group labels (G+1 copies each). skip_reasons: (bs,) "" where the GT is usable.
    Returns:
        ``(is_gt, is_pad, skipped)``: bool (bs,), bool (bs,), and the reason on pad rows ("" elsewhere).
    """
    reasons = np.asarray(skip_reasons, dtype=object)
    last = last_copy_per_group(uids)
    is_gt = select_gt_rows(uids, reasons == "")
    is_pad = last & (reasons != "")
    return is_gt, is_pad, np.where(is_pad, reasons, "").astype(object)


# ------------------------------------------------------------------------------------------
# §3.3 reward smoothing
# ------------------------------------------------------------------------------------------
def smooth_gt_rewards(scores: torch.Tensor, index: Any, is_gt: Any, match_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Reward smoothing per group (docs/METHOD.md §3.3): Â_gt becomes 0 when the GT adds nothing.

    r_gt := mean(r_1..r_G)  if max(m_1..m_G) >= m_gt  (r_i: the group's non-GT rows)

    ``m`` = ``match_scores`` (default: ``scores``, i.e. the literal ``max r_i >= r_gt``) is the
    reward used to decide whether a rollout already matches the GT; the new r_gt is always the
    mean of the full rollout rewards (computed in float64, rounded once to ``scores.dtype``; the
    ``visurf`` estimator recognises exactly this value and gives the row Â = 0). The recipe
    passes the rewards without the thinking-format component when the GT's thinking reward is
    eliminated (docs/METHOD.md §3.2): a well-formatted but wrong rollout must not "match" a GT that
    cannot earn that component.

    Applied to every GT row of a group independently; groups without a GT row, or without any
    rollout, are returned unchanged.

    Args:
        scores: `(torch.Tensor)` shape (bs,), outcome reward per row.
        index: `(np.ndarray | list | torch.Tensor)` shape (bs,), group label per row (`uid`).
        is_gt: `(torch.Tensor | np.ndarray | list)` shape (bs,), True on GT rows.
        match_scores: `(torch.Tensor | None)` shape (bs,), rewards compared to decide a match.

    Returns:
        `(torch.Tensor)` shape (bs,), a new tensor (same dtype/device as `scores`).
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (one outcome reward per row), got shape {tuple(scores.shape)}")
    gt = torch.as_tensor(np.asarray(is_gt, dtype=bool) if not isinstance(is_gt, torch.Tensor) else is_gt)
    gt = gt.to(device=scores.device, dtype=torch.bool).reshape(-1)
    gid, n_groups = group_ids(index, device=scores.device)
    if not (gt.numel() == gid.numel() == scores.numel()):
        raise ValueError(f"scores, index and is_gt differ in length: {scores.numel()}, {gid.numel()}, {gt.numel()}")

    match = (scores if match_scores is None else match_scores.reshape(-1)).to(torch.float64)
    if match.numel() != scores.numel():
        raise ValueError(f"match_scores has {match.numel()} rows, scores {scores.numel()}")
    rollout = ~gt
    r_gid, r_scores = gid[rollout], scores[rollout].to(torch.float64)
    n_rollouts = torch.bincount(r_gid, minlength=n_groups)
    r_mean = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(0, r_gid, r_scores)
    r_mean = r_mean / n_rollouts.clamp_min(1)
    r_max = torch.full_like(r_mean, -torch.inf).scatter_reduce_(0, r_gid, match[rollout], reduce="amax")

    smooth = gt & (n_rollouts[gid] > 0) & (r_max[gid] >= match)
    return torch.where(smooth, r_mean[gid].to(scores.dtype), scores)


def match_scores_for(batch: Any, scores: torch.Tensor, gt_thinking_reward: str) -> torch.Tensor | None:
    """The rewards compared by smoothing: like with like.

    ``gt_thinking_reward="zero"``: the GT's thinking-format component is 0, so every row is
    compared without it (``score - thinking_format``, the column the task scorers return) — a
    rollout that is only ahead by its format point does not "match" the GT. ``"full"``: the GT
    is credited with that point, so the full rewards compare like with like. None (full
    rewards, the literal docs/METHOD.md §3.3 formula) when the column is absent (custom scorers).
    """
    if gt_thinking_reward != "zero" or "thinking_format" not in batch.non_tensor_batch:
        return None
    thinking = np.asarray(batch.non_tensor_batch["thinking_format"], dtype=np.float64)
    return scores.to(torch.float64) - torch.from_numpy(np.nan_to_num(thinking))


# ------------------------------------------------------------------------------------------
# inject_when=all_fail
# ------------------------------------------------------------------------------------------
def task_solved(
    scores: torch.Tensor, uids: Sequence[Any], is_gt: np.ndarray, data_sources: Sequence[str] | None = None,
    accuracy: Sequence[float] | None = None, success_threshold: float | None = None, task_thresholds: bool = True,
) -> np.ndarray:
    """Per row: did the response solve the task? (``inject_when=all_fail``)

    solved_i = a_i >= θ_i,  a_i = the row's accuracy component (``accuracy`` column of the task
    scorers; the row's reward when there is none), θ_i = ``TASK_SUCCESS_ACCURACY[task]`` of the
    row's data_source (the task's full accuracy: grounding / anomaly / lesion 3 — every object
    matched on box IoU, box corners and point —, gui 1, math 1) when ``task_thresholds`` (the
    recipe's own scorers produced the rewards). Otherwise — a custom reward function or a reward
    model, whose scale is its own (a 0-1 reward would never reach 3), or a data_source outside
    the table — θ_i = ``success_threshold`` (``visurf.success_threshold``) when set, else the ``a``
    of its group's GT row: a rollout solved the task when it is as accurate as the label (no GT
    in the group: nothing is solved).

    Args:
        scores: (bs,) outcome rewards. uids: (bs,) group labels. is_gt: (bs,) bool.
        data_sources: (bs,) or None (all unknown). accuracy: (bs,) floats (nan: not reported) or None.
    Returns:
        (bs,) bool.
    """
    a = scores.detach().to(torch.float64).cpu().numpy().copy()
    if accuracy is not None:
        try:
            acc = np.asarray(accuracy, dtype=np.float64)
        except (TypeError, ValueError):  # object column with None where a scorer reported nothing
            acc = np.array([np.nan if v is None else float(v) for v in accuracy], dtype=np.float64)
        a = np.where(np.isfinite(acc), acc, a)
    n = len(a)
    sources = np.asarray(data_sources if data_sources is not None else [""] * n, dtype=object)
    theta = np.array([TASK_SUCCESS_ACCURACY.get(DATA_SOURCE_TASK.get(str(s), ""), np.nan) for s in sources])
    if not task_thresholds:
        theta = np.full(n, np.nan)
    if success_threshold is not None:
        theta = np.where(np.isnan(theta), float(success_threshold), theta)
    unknown = np.isnan(theta)
    if unknown.any():
        gid, n_groups = group_ids(uids)
        gid = gid.numpy()
        gt_value = np.full(n_groups, np.inf)  # no GT row: never solved
        gt = np.asarray(is_gt, dtype=bool)
        gt_value[gid[gt]] = a[gt]
        theta = np.where(unknown, gt_value[gid], theta)
    return a >= theta


def all_fail_active(uids: Sequence[Any], is_gt: np.ndarray, solved: np.ndarray) -> np.ndarray:
    """GT rows that take part under ``inject_when=all_fail``: active_gt = is_gt ∧ no rollout of the
    group solved the task (``task_solved``). A group whose GT is switched off trains like GRPO."""
    gt = np.asarray(is_gt, dtype=bool)
    gid, n_groups = group_ids(uids)
    gid = gid.numpy()
    any_solved = np.zeros(n_groups, dtype=bool)
    np.logical_or.at(any_solved, gid[~gt], np.asarray(solved, dtype=bool)[~gt])
    return gt & ~any_solved[gid]


def group_reward_step(
    scores: torch.Tensor,
    uids: Sequence[Any],
    is_gt: np.ndarray,
    smoothing: bool,
    inject_when: str,
    match_scores: torch.Tensor | None = None,
    solved: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """The group part of reward control, over a whole batch of outcome rewards.

    1. smoothing (docs/METHOD.md §3.3): ``r_gt := mean(r_1..r_G)`` if ``max(m_1..m_G) >= m_gt``
       (``m`` = ``match_scores``, default ``scores``; see ``smooth_gt_rewards``);
    2. ``inject_when="all_fail"``: the GT takes part only if no rollout of its group solved the
       task (``solved``, from ``task_solved``); ``"always"``: every GT row is active.

    Args:
        scores: (bs,) outcome reward per row. uids: (bs,) group labels. is_gt: (bs,) bool.
        match_scores: (bs,) rewards used for the smoothing comparison, or None.
        solved: (bs,) bool, required for ``inject_when="all_fail"``.
    Returns:
        ``(new_scores (bs,), active_gt (bs,) bool)``.
    """
    if inject_when not in INJECT_WHEN:
        raise ValueError(f"visurf.inject_when must be one of {INJECT_WHEN}, got {inject_when!r}")
    gt = np.asarray(is_gt, dtype=bool)
    new_scores = smooth_gt_rewards(scores, uids, gt, match_scores) if smoothing else scores.clone()
    if inject_when == "all_fail":
        if solved is None:
            raise ValueError("inject_when='all_fail' needs the per-row 'solved' mask (task_solved)")
        return new_scores, all_fail_active(uids, gt, solved)
    return new_scores, gt.copy()


def set_outcome_scores(token_scores: torch.Tensor, response_mask: torch.Tensor, scores: torch.Tensor) -> None:
    """In place: make ``token_scores[i].sum() == scores[i]`` by rewriting the last valid response
    token (where verl puts outcome rewards; valid = ``response_mask``, the caller passes the response
    part of the attention mask): ``last := scores - (row sum - last)``. Exact when the
    other tokens are 0, so a smoothed GT equals the rollout mean bit for bit.
    Rows without response tokens are left alone."""
    length = response_mask.sum(-1).long()
    rows = torch.nonzero(length > 0).flatten()
    last = length[rows] - 1
    others = token_scores[rows].sum(-1) - token_scores[rows, last]
    token_scores[rows, last] = (scores[rows].to(token_scores.dtype) - others)


def row_mask(batch: Any, key: str, default: np.ndarray | None = None) -> np.ndarray:
    """The bool column ``key`` of ``batch.non_tensor_batch`` as (bs,) bool; ``default`` (all False
    when None) where the batch has no such column."""
    values = batch.non_tensor_batch.get(key)
    if values is None:
        return np.zeros(len(batch), dtype=bool) if default is None else default
    return np.asarray(values, dtype=bool)


def apply_group_step(
    batch: Any, uids: Sequence[Any], smoothing: bool, inject_when: str, gt_thinking_reward: str = "zero",
    success_threshold: float | None = None, task_thresholds: bool = True,
) -> None:
    """The group step of reward control on a generated, scored batch (a verl ``DataProto``, in place).

    Where verl 0.9.1 first sees a whole batch of rewards: the agent-loop workers return each
    row's score as ``rm_scores`` (at its last response token). ``group_reward_step`` runs over
    the outcome rewards (groups = ``uids``, the batch's ``uid`` column; pad rows, ``IS_PAD``, in groups of their own) and the
    result is written back exactly (``set_outcome_scores``). Smoothing compares like with like
    (``match_scores_for``); all_fail reads ``accuracy`` and ``data_source`` (``task_solved``).
    Adds the columns ``GT_ACTIVE`` and ``GT_SCORE_RAW`` (GT reward before smoothing, nan
    elsewhere). Without ``rm_scores`` (a reward model scoring later) the batch is only annotated:
    every GT row active, no smoothing. Idempotent.
    """
    nt = batch.non_tensor_batch
    is_gt = row_mask(batch, C.IS_GT)
    uids = own_groups(uids, row_mask(batch, C.IS_PAD))
    active, raw = is_gt.copy(), np.full(len(batch), np.nan)
    if "rm_scores" in batch.batch.keys():
        token_scores = batch.batch["rm_scores"]
        scores = token_scores.sum(-1)
        raw[is_gt] = scores[torch.from_numpy(is_gt)].double().numpy()
        match = match_scores_for(batch, scores, gt_thinking_reward)
        solved = None
        if inject_when == "all_fail":
            solved = task_solved(scores, uids, is_gt, nt.get("data_source"), nt.get("accuracy"),
                                 success_threshold, task_thresholds)
        new_scores, active = group_reward_step(scores, uids, is_gt, smoothing, inject_when, match, solved)
        # the last token of the response's attention mask, where verl puts the outcome reward (GT rows
        # whose leading tokens are context, gt_styles, have response_mask 0 there); response_mask when
        # the batch has no attention mask
        valid = (batch.batch["attention_mask"][:, -token_scores.shape[-1]:] if "attention_mask" in batch.batch.keys()
                 else batch.batch["response_mask"])
        set_outcome_scores(token_scores, valid, new_scores)
    nt[C.GT_ACTIVE] = active
    nt[C.GT_SCORE_RAW] = raw
