"""Reward control (METHOD.md §3): GT alignment, the GT thinking-reward switch, reward smoothing.

- `align_gt`: the GT response text in rollout style (§3.1).
- `smooth_gt_rewards`: r_gt := mean of the rollouts when a rollout already matches the GT (§3.3).
- `RewardControl`: the switches of all three strategies (§3.1-3.3), read from the `visurf:`
  config block. The GT thinking-reward elimination itself (§3.2) is applied by the reward
  manager, which reads `RewardControl.gt_thinking_reward`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from verl_ext.constants import ANSWER_TEMPLATE, BBOX_KEY, FRAME, POINT_KEY, TASKS
from verl_ext.visurf.groups import group_ids

__all__ = ["RewardControl", "align_gt", "smooth_gt_rewards"]

OBJECT_TASKS = ("grounding", "anomaly", "lesion")  # answer: list of {bbox_2d, point_2d} objects
GT_THINKING_REWARDS = ("zero", "full")
_ANSWER_FIELD = "{answer}"
_LABEL_REPR_CHARS = 200  # a bad label is quoted in the error message up to this many characters


# --------------------------------------------------------------------------------------------
# §3.1 GT alignment
# --------------------------------------------------------------------------------------------
class _BadLabel(ValueError):
    """What is wrong with a label (re-raised by `align_gt` with the label quoted)."""


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _coords(obj: Mapping, key: str, n: int) -> list[int]:
    """obj[key] as n integer coordinates in the FRAME x FRAME frame (round half up)."""
    raw = obj[key]
    if not isinstance(raw, list) or len(raw) != n:
        raise _BadLabel(f"{key} must be a list of {n} numbers, got {raw!r}")
    for c in raw:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise _BadLabel(f"{key} must hold finite numbers, got {raw!r}")
        if not 0 <= c <= FRAME:
            raise _BadLabel(f"{key} coordinate {c!r} outside the {FRAME}x{FRAME} frame")
    coords = [_round_half_up(c) for c in raw]
    if key == BBOX_KEY and (coords[0] > coords[2] or coords[1] > coords[3]):
        raise _BadLabel(f"{key} must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got {raw!r}")
    return coords


def _parse_objects(ground_truth: str) -> list[dict[str, list[int]]]:
    """A JSON list of label objects -> [{bbox_2d?, point_2d?}] with integer coordinates."""
    try:
        objects = json.loads(ground_truth)
    except json.JSONDecodeError as e:
        raise _BadLabel(f"not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(objects, list):
        raise _BadLabel(f"must be a JSON list of objects, got {type(objects).__name__}")
    parsed = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise _BadLabel(f"object {i} must be a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {BBOX_KEY, POINT_KEY}
        if unknown:
            raise _BadLabel(f"object {i} has unknown keys {sorted(unknown)}")
        if not obj:
            raise _BadLabel(f"object {i} has neither {BBOX_KEY} nor {POINT_KEY}")
        try:
            parsed.append({key: _coords(obj, key, n) for key, n in ((BBOX_KEY, 4), (POINT_KEY, 2)) if key in obj})
        except _BadLabel as e:
            raise _BadLabel(f"object {i}: {e}") from None
    return parsed


def _scoreable(ground_truth: str) -> None:
    """The task scorer must accept the label too (it requires e.g. a point on every object):
    a GT the reward cannot score is a bad label here, not a crash in the reward worker."""
    from verl_ext.rewards.parsing import parse_label

    try:
        parse_label(ground_truth)
    except ValueError as e:
        raise _BadLabel(f"the reward's label parser rejects it: {e}") from None


def _gui_answer(objects: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
    """The one GUI element -> [{point_2d}] (its point; the scorer requires box and point)."""
    if len(objects) != 1:
        raise _BadLabel(f"a gui label must hold exactly one object, got {len(objects)}")
    (obj,) = objects
    if POINT_KEY not in obj:
        raise _BadLabel(f"the gui element has no {POINT_KEY}")
    return [{POINT_KEY: obj[POINT_KEY]}]


def _check_template(template: str) -> None:
    if not isinstance(template, str) or template.count(_ANSWER_FIELD) != 1:
        raise ValueError(f"answer template must contain {_ANSWER_FIELD} exactly once, got {template!r}")


def _label_repr(ground_truth: Any) -> str:
    text = repr(ground_truth)
    return text if len(text) <= _LABEL_REPR_CHARS else text[: _LABEL_REPR_CHARS - 3] + "..."


def align_gt(ground_truth: str, task: str, template: str = ANSWER_TEMPLATE) -> str:
    """The GT response y' in the rollout's own style (METHOD.md §3.1).

    y' = template(json.dumps(objects))  — objects with integer coordinates, keys bbox_2d then
    point_2d, json.dumps default separators (", " and ": ").

    grounding / anomaly / lesion: the label's objects (non-object `[]` -> `<answer>[]</answer>`);
    gui: `[{"point_2d": [x, y]}]` (the label's point); math: the
    canonical answer string, stripped. Coordinates are rounded half up.

    Args:
        ground_truth: `(str)` the label, `reward_model.ground_truth` (formats: verl_ext.constants).
        task: `(str)` one of `verl_ext.constants.TASKS`.
        template: `(str)` answer template containing `{answer}` once (default ANSWER_TEMPLATE).

    Returns:
        `(str)` the GT response text (tokenised + EOS by the GT injection).

    Raises:
        ValueError: unknown task, bad template, or a bad label (the message quotes the label and
            says what is wrong).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    _check_template(template)
    try:
        if not isinstance(ground_truth, str):
            raise _BadLabel(f"must be a str, got {type(ground_truth).__name__}")
        if task == "math":
            answer = ground_truth.strip()
            if not answer:
                raise _BadLabel("empty math answer")
        else:
            objects = _parse_objects(ground_truth)
            answer = json.dumps(_gui_answer(objects) if task == "gui" else objects)
            _scoreable(ground_truth)
    except _BadLabel as e:
        raise ValueError(f"bad {task} label {_label_repr(ground_truth)}: {e}") from None
    return template.replace(_ANSWER_FIELD, answer)


# --------------------------------------------------------------------------------------------
# §3.3 Reward smoothing
# --------------------------------------------------------------------------------------------
def smooth_gt_rewards(scores: torch.Tensor, index: Any, is_gt: Any, match_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Reward smoothing per group (METHOD.md §3.3): Â_gt becomes 0 when the GT adds nothing.

    r_gt := mean(r_1..r_G)  if max(m_1..m_G) >= m_gt  (r_i: the group's non-GT rows)

    ``m`` = ``match_scores`` (default: ``scores``, i.e. the literal ``max r_i >= r_gt``) is the
    reward used to decide whether a rollout already matches the GT; the new r_gt is always the
    mean of the full rollout rewards, so Â_gt = 0 exactly. The recipe passes the rewards
    without the thinking-format component when the GT's thinking reward is eliminated
    (METHOD §3.2): a well-formatted but wrong rollout must not "match" a GT that cannot earn
    that component (for math it would tie the GT, 1 vs 1, and cancel the SFT signal exactly
    when every rollout fails).

    Applied to every GT row of a group independently; groups without a GT row, or without any
    rollout, are returned unchanged. Vectorised over the batch (no Python loop over rows).

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


# --------------------------------------------------------------------------------------------
# The switches
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RewardControl:
    """The three reward-control strategies of METHOD.md §3, each independently switchable.

    Args:
        align: render the GT in rollout style with `align_gt` (§3.1); False: the stripped raw
            label inside `gt_template` (the "no alignment" ablation).
        gt_template: answer template wrapping the GT answer; contains `{answer}` once.
        gt_thinking_reward: the GT's thinking-format component (§3.2), never measured (the GT
            has no reasoning): "zero" gives it 0, "full" credits the full point. Smoothing and
            all_fail compare like with like (without the component under "zero").
        smoothing: r_gt := rollout mean when a rollout matches or beats the GT (§3.3).
    """

    align: bool = True
    gt_template: str = ANSWER_TEMPLATE
    gt_thinking_reward: Literal["zero", "full"] = "zero"
    smoothing: bool = True

    def __post_init__(self):
        for name in ("align", "smoothing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"visurf.{name} must be a bool, got {getattr(self, name)!r}")
        _check_template(self.gt_template)
        if self.gt_thinking_reward not in GT_THINKING_REWARDS:
            raise ValueError(
                f"visurf.gt_thinking_reward must be one of {GT_THINKING_REWARDS}, got {self.gt_thinking_reward!r}"
            )

    @classmethod
    def from_config(cls, config: Mapping | Any | None) -> RewardControl:
        """Build from the `visurf:` config block (dict or OmegaConf); other keys are ignored.

        Missing keys keep their defaults; `None` gives all defaults.
        """
        if config is None:
            return cls()
        if not isinstance(config, Mapping):  # DictConfig is a Mapping (interpolations resolve on access)
            raise ValueError(f"reward-control config must be a mapping, got {type(config).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(config).items() if k in fields})

    def gt_response(self, ground_truth: str, task: str) -> str:
        """The GT response text for a label: `align_gt` when `align`, else the raw label in the template."""
        if self.align:
            return align_gt(ground_truth, task, self.gt_template)
        if not isinstance(ground_truth, str) or not ground_truth.strip():
            raise ValueError(f"bad {task} label {_label_repr(ground_truth)}: must be a non-empty str")
        return self.gt_template.replace(_ANSWER_FIELD, ground_truth.strip())
