"""The seam for GT construction: what the GT member of a group answers, and which of its tokens train.

A *GT style* is one module of this package, chosen by ``visurf.gt_style=<module name>``; nothing
else names it (the option list is the package's modules, ``gt_style_names``). The module defines

    build(request: GTRequest) -> Iterable[GTResponse]

the GT responses it proposes for one group, best first. ``request`` carries the group's rendered
GT text (``visurf.gt_template`` around the aligned label, ``reward_control.render_gt``), where the
label starts in it, and the group's sampled rollouts (their valid response token ids and rewards).
A ``GTResponse`` is ``context_ids`` (tokens taken as they are — e.g. from a rollout — that stay in
the row as context: attention 1, ``response_mask`` 0, verl's mechanism for tokens the policy did not
choose, as for tool outputs in multi-turn rollouts) followed by ``text`` (tokenised here, + EOS: the
GT's own tokens, trained on). ``build_gt_rows`` takes the first proposal that fits
``max_response_length``; a style that proposes nothing that fits falls back to ``template`` for that
group (counted in ``GT_FALLBACK``).

Styles: ``template`` (the paper's setting and today's default: the rendered GT text alone) and
``rollout_think`` (the think block of the group's best rollout that has one, then the GT answer).

``visurf.gt_loss_tokens`` (``GT_LOSS_TOKENS``) is applied here for every style: ``all`` trains every
GT token; ``answer`` also masks (``response_mask`` 0) the leading GT tokens that end before the
label starts (``<answer>`` and anything before the label, e.g. a template's think block).

Where this runs: ``gt_injection.VisurfAgentLoopManager`` calls ``build_gt_rows`` after generation,
when every rollout of the batch is done and scored, rescores the rewritten GT rows with verl's
reward workers, then runs the group step (smoothing, all_fail). Rows are rewritten in place
(``write_gt_responses``) so that prompt ids, images and 3-D rope positions stay those of the group
(``gt_injection.check_gt_rows``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from verl_ext.visurf import columns as C
from verl_ext.visurf.group_step import row_mask

__all__ = [
    "DEFAULT_GT_STYLE",
    "GT_LOSS_TOKENS",
    "GTRequest",
    "GTResponse",
    "build_gt_rows",
    "choose_gt_response",
    "compose_gt_response",
    "gt_style_metrics",
    "gt_style_names",
    "response_position_ids",
    "style_builder",
    "text_prefix_tokens",
    "write_gt_responses",
]

DEFAULT_GT_STYLE = "template"  # the paper's setting (docs/METHOD.md §1.2, §3.1)
GT_LOSS_TOKENS = ("all", "answer")  # visurf.gt_loss_tokens


# ------------------------------------------------------------------------------------------
# The registry: one module per style
# ------------------------------------------------------------------------------------------
def gt_style_names() -> tuple[str, ...]:
    """The valid ``visurf.gt_style`` values: the public modules of this package, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def style_builder(name: str):
    """The ``build`` function of style ``name``; ValueError naming the known styles."""
    if name not in gt_style_names():
        raise ValueError(f"visurf.gt_style must be one of {gt_style_names()}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}").build


# ------------------------------------------------------------------------------------------
# What a style sees and returns
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GTRequest:
    """One group's GT to build.

    Args:
        gt_text: the rendered GT response text (``visurf.gt_template`` around the aligned label).
        label_start: index in ``gt_text`` where the label begins (``len`` of the template's part
            before ``{answer}``).
        rollout_ids: the group's sampled rollouts, each its valid response token ids (batch order).
        rollout_rewards: their outcome rewards (before smoothing), same order.
        tokenizer: the policy's tokenizer (decode / encode as the GT agent loop does).
    """

    gt_text: str
    label_start: int
    rollout_ids: Sequence[Sequence[int]] = ()
    rollout_rewards: Sequence[float] = ()
    tokenizer: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class GTResponse:
    """A proposed GT response: ``context_ids`` (kept as they are, not trained) then ``text`` (the GT's
    own tokens: ``encode(text) + [eos]``, trained). ``label_start``: index in ``text`` where the label
    begins (``gt_loss_tokens=answer`` masks the tokens before it)."""

    context_ids: tuple[int, ...]
    text: str
    label_start: int


def template_response(request: GTRequest) -> GTResponse:
    """The rendered GT text alone (style ``template``, and every style's fallback)."""
    return GTResponse((), request.gt_text, request.label_start)


# ------------------------------------------------------------------------------------------
# Token boundaries
# ------------------------------------------------------------------------------------------
def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """``tokenizer.decode`` keeping every character (special tokens, spacing), so that the text of a
    token prefix is a prefix of the text of the whole sequence."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def text_prefix_tokens(tokenizer: Any, ids: Sequence[int], n_chars: int, text: str | None = None) -> int:
    """The largest ``k`` such that ``decode(ids[:k])`` is a prefix of ``decode(ids)`` (``text``) of at
    most ``n_chars`` characters: the tokens that lie wholly before character ``n_chars``. A token that
    straddles the boundary is not counted. Binary search over ``k`` (decoded length grows with ``k``),
    then a step back over any prefix that does not decode to a prefix (a split multi-byte character)."""
    text = decode(tokenizer, ids) if text is None else text

    def fits(k: int) -> bool:
        d = decode(tokenizer, ids[:k])
        return len(d) <= n_chars and text.startswith(d)

    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(decode(tokenizer, ids[:mid])) <= n_chars:
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and not fits(lo):
        lo -= 1
    return lo


def compose_gt_response(response: GTResponse, tokenizer: Any, loss_tokens: str) -> tuple[list[int], list[int]]:
    """The GT row's response ids and loss mask for a proposal.

    ids  = context_ids + encode(text) + [eos]
    mask = 0 on context_ids; 1 on the GT's own tokens, except (``loss_tokens="answer"``) the leading
    ones that end at or before ``label_start`` (``text_prefix_tokens``), which are 0 too.
    """
    if loss_tokens not in GT_LOSS_TOKENS:
        raise ValueError(f"visurf.gt_loss_tokens must be one of {GT_LOSS_TOKENS}, got {loss_tokens!r}")
    own = tokenizer.encode(response.text, add_special_tokens=False) + [tokenizer.eos_token_id]
    masked = 0
    if loss_tokens == "answer":
        masked = text_prefix_tokens(tokenizer, own, response.label_start)
    ids = list(response.context_ids) + own
    mask = [0] * (len(response.context_ids) + masked) + [1] * (len(own) - masked)
    return ids, mask


# ------------------------------------------------------------------------------------------
# Tensors of rewritten GT rows (verl 0.9.1's agent-loop output layout)
# ------------------------------------------------------------------------------------------
def response_position_ids(position_ids: torch.Tensor, prompt_length: int, valid: torch.Tensor) -> torch.Tensor:
    """Position ids of rows whose response was replaced, as verl's agent loop computes them.

    The prompt part is kept. Response token j (valid, ``valid[:, j]``) continues the prompt in every
    channel: ``pos[..., P + j] = pos[..., P - 1] + 1 + j`` (text after the last prompt token; the
    prompt is left-padded, so column P - 1 is its last token). Padding follows verl 0.9.1
    (``verl/experimental/agent_loop/agent_loop.py``, ``_compute_position_ids``): 1-D positions are
    ``compute_position_id_with_mask`` (the last valid position repeated); with M-RoPE
    (``(bs, 4, L)``: text channel + 3 rope channels) padding is 1 in the text channel
    (``torch.ones``) and 0 in the rope channels (``get_rope_index`` starts from zeros).

    Args:
        position_ids: (bs, L) or (bs, C, L) of the rows. prompt_length: P. valid: (bs, L - P) bool.
    Returns:
        a new tensor like ``position_ids``.
    """
    out = position_ids.clone()
    squeeze = out.dim() == 2
    pos = out.unsqueeze(1) if squeeze else out
    R = pos.shape[-1] - prompt_length
    j = torch.arange(R, device=pos.device)
    cont = pos[..., prompt_length - 1: prompt_length] + 1 + j  # (bs, C, R)
    if squeeze:  # compute_position_id_with_mask: padding repeats the last valid position
        last = (valid.long().sum(-1) - 1).clamp_min(0)
        pad = cont.gather(-1, last.view(-1, 1, 1).expand(-1, pos.shape[1], 1)).expand_as(cont)
    else:
        pad = torch.zeros_like(cont)
        if pos.shape[1] == 4:
            pad[:, 0] = 1
    pos[..., prompt_length:] = torch.where(valid.unsqueeze(1), cont, pad)
    return pos.squeeze(1) if squeeze else pos


def write_gt_responses(batch: Any, rows: np.ndarray, ids: list[list[int]], masks: list[list[int]]) -> None:
    """In place: give ``rows`` of a generated batch (verl ``DataProto``) new responses.

    ``responses`` / ``input_ids`` response part = the ids right-padded with 0 (verl's pad), response
    part of ``attention_mask`` = 1 on them, ``response_mask`` = the loss mask, ``position_ids`` by
    ``response_position_ids``; ``rollout_log_probs`` (when present) 0 — placeholders the trainer
    overwrites with π_old, as for every GT row. ``rm_scores`` is the caller's: a row whose ids changed
    is rescored (``gt_injection.VisurfAgentLoopManager``). Prompt columns (ids, mask, positions,
    images) are untouched. Vectorised over rows and tokens.
    """
    if len(rows) == 0:
        return
    t = batch.batch
    R = t["responses"].shape[-1]
    P = t["prompts"].shape[-1]
    if max(map(len, ids)) > R:
        raise ValueError(f"a GT response of {max(map(len, ids))} tokens exceeds the response length {R}")
    idx = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    lengths = torch.tensor([len(x) for x in ids])
    valid = torch.arange(R).unsqueeze(0) < lengths.unsqueeze(1)
    resp = torch.zeros(len(ids), R, dtype=t["responses"].dtype)
    mask = torch.zeros(len(ids), R, dtype=t["response_mask"].dtype)
    resp[valid] = torch.tensor([i for x in ids for i in x], dtype=resp.dtype)
    mask[valid] = torch.tensor([m for x in masks for m in x], dtype=mask.dtype)
    t["responses"][idx] = resp
    t["response_mask"][idx] = mask
    t["input_ids"][idx, P:] = resp
    t["attention_mask"][idx, P:] = valid.to(t["attention_mask"].dtype)
    t["position_ids"][idx] = response_position_ids(t["position_ids"][idx], P, valid)
    if "rollout_log_probs" in t.keys():
        t["rollout_log_probs"][idx] = 0


# ------------------------------------------------------------------------------------------
# The batch step
# ------------------------------------------------------------------------------------------
def _group_rollouts(uids: np.ndarray, is_gt: np.ndarray, sampled: np.ndarray) -> dict[Any, list[int]]:
    """uid -> row indices of its sampled rollouts (batch order), for the groups that have a GT row."""
    out: dict[Any, list[int]] = {}
    for r in np.nonzero(sampled & np.isin(uids, uids[is_gt]))[0].tolist():
        out.setdefault(uids[r], []).append(r)
    return out


def choose_gt_response(build, request: GTRequest, loss_tokens: str,
                       max_tokens: int) -> tuple[GTResponse, list[int], list[int], bool]:
    """The first of the style's proposals whose ids fit ``max_tokens``, composed
    (``compose_gt_response``); none: the ``template`` response. Returns ``(response, ids, loss mask,
    fallback)``."""
    for proposal in build(request):
        ids, mask = compose_gt_response(proposal, request.tokenizer, loss_tokens)
        if len(ids) <= max_tokens:
            return proposal, ids, mask, False
    proposal = template_response(request)
    return (proposal, *compose_gt_response(proposal, request.tokenizer, loss_tokens), True)


def build_gt_rows(batch: Any, uids: Sequence[Any], gt_texts: Sequence[str], *, style: str, loss_tokens: str,
                  label_start: int, tokenizer: Any) -> np.ndarray:
    """Build every GT row of a generated batch with ``style`` (in place); returns the rows whose token
    ids changed (they need rescoring).

    For each GT row (``IS_GT``) the style gets its group's rendered GT text and the group's sampled
    rollouts (neither GT nor pad rows; valid response ids from the response attention mask; rewards
    from ``rm_scores`` when present, else 0) and proposes responses best first; the first whose ids
    fit the response length is written (``compose_gt_response``, ``write_gt_responses``). None
    fitting, or none proposed: the ``template`` response, and the row is counted a fallback.

    Adds the columns ``GT_BORROWED`` (context tokens of the GT row, 0 elsewhere) and
    ``GT_FALLBACK`` (bool). With ``style="template"`` and ``loss_tokens="all"`` nothing is rewritten
    (the GT agent loop already produced exactly that response).
    """
    n = len(batch)
    uids = np.asarray(uids, dtype=object)
    is_gt = row_mask(batch, C.IS_GT)
    borrowed = np.zeros(n, dtype=np.int64)
    fallback = np.zeros(n, dtype=bool)
    changed = np.zeros(0, dtype=np.int64)
    if is_gt.any() and not (style == "template" and loss_tokens == "all"):
        build = style_builder(style)
        t = batch.batch
        R = t["responses"].shape[-1]
        valid_len = t["attention_mask"][:, -R:].sum(-1).tolist()
        rewards = t["rm_scores"].sum(-1).tolist() if "rm_scores" in t.keys() else [0.0] * n
        sampled = ~is_gt & ~row_mask(batch, C.IS_PAD)
        groups = _group_rollouts(uids, is_gt, sampled)
        responses = t["responses"]
        rows, new_ids, new_masks = [], [], []
        for g in np.nonzero(is_gt)[0].tolist():
            members = groups.get(uids[g], [])
            request = GTRequest(
                gt_text=str(gt_texts[g]), label_start=label_start,
                rollout_ids=[responses[r, : valid_len[r]].tolist() for r in members],
                rollout_rewards=[float(rewards[r]) for r in members], tokenizer=tokenizer)
            chosen = choose_gt_response(build, request, loss_tokens, R)
            fallback[g] = chosen[3]
            borrowed[g] = len(chosen[0].context_ids)
            rows.append(g)
            new_ids.append(chosen[1])
            new_masks.append(chosen[2])
        old_ids = [responses[r, : valid_len[r]].tolist() for r in rows]
        old_masks = [t["response_mask"][r, : valid_len[r]].tolist() for r in rows]
        new_tokens = [a != b for a, b in zip(old_ids, new_ids)]
        write = [k for k, (new, m_old, m_new) in enumerate(zip(new_tokens, old_masks, new_masks)) if new or m_old != m_new]
        write_gt_responses(batch, np.asarray([rows[k] for k in write], dtype=np.int64),
                           [new_ids[k] for k in write], [new_masks[k] for k in write])
        changed = np.asarray([r for r, new in zip(rows, new_tokens) if new], dtype=np.int64)
    batch.non_tensor_batch[C.GT_BORROWED] = borrowed
    batch.non_tensor_batch[C.GT_FALLBACK] = fallback
    return changed


def gt_style_metrics(batch: Any) -> dict[str, float]:
    """The GT style's ``visurf/*`` metrics of a training batch with GT rows (any style):

    * ``gt_think_fallback``: GT rows whose style proposed nothing that fits, built as ``template``
      (``rollout_think``: no rollout of the group has a well-formed think block);
    * ``gt_borrowed_share``: share of GT rows with borrowed context tokens (``GT_BORROWED`` > 0);
    * ``gt_trained_tokens_mean``: mean number of GT tokens that train (``response_mask`` 1).
    """
    is_gt = row_mask(batch, C.IS_GT)
    if not is_gt.any():
        return {}
    borrowed = np.asarray(batch.non_tensor_batch.get(C.GT_BORROWED, np.zeros(len(batch))), dtype=np.int64)
    trained = batch.batch["response_mask"][torch.from_numpy(is_gt)].sum(-1).double()
    return {
        "visurf/gt_think_fallback": float(row_mask(batch, C.GT_FALLBACK)[is_gt].sum()),
        "visurf/gt_borrowed_share": float((borrowed[is_gt] > 0).mean()),
        "visurf/gt_trained_tokens_mean": float(trained.mean()),
    }
