"""Grounding reward (also anomaly and lesion): the Seg-Zero / VisionReasoner definition.

``score = thinking_format + answer_format + accuracy + non_repeat`` (max 1 + 2 + 3 + 1 = 7):

* thinking_format (0/1): the response full-matches ``THINK_ANSWER_PATTERN``; for a GT row it is
  not measured: 0 with ``gt_thinking_reward="zero"``, 1 with ``"full"`` (docs/METHOD.md §3.2).
* answer_format (0..2): per predicted object +1 when ``bbox_2d`` is a list of 4 finite numbers,
  +1 when ``point_2d`` is a list of 2 finite numbers; averaged over the objects.
* accuracy (0..3): Hungarian matching (``scipy.optimize.linear_sum_assignment``) of predicted
  against label objects on the per-pair reward
  ``[IoU > IOU_MATCH] + [mean corner L1 < BOX_L1_MATCH] + [point dist < POINT_MATCH and the
  point inside its own predicted box]`` (the public cost is ``3 − reward``); the matched total
  is divided by ``max(M, N)``. A predicted object whose box (point) is invalid earns no box
  (point) terms but still counts in ``M``.
* non_repeat (0/1): see ``parsing.non_repeat``.

Non-object rule (docs/METHOD.md §4; the public function scores it 0 by accident): label ``[]`` and
prediction ``[]`` earn answer_format 2 and accuracy 3; any object against ``[]`` earns accuracy 0
(answer_format as usual); ``[]`` against a non-empty label earns answer_format 0 and accuracy 0
(an empty answer has no objects to average, as in the public function).

Box geometry follows the public code's inclusive-pixel convention: area = (x2−x1+1)(y2−y1+1),
so a degenerate box has area 1 and IoU is always defined.

Coordinates: the label is in the 840 frame; the response in the model's convention ``coords``
(``verl_ext.coords``: ``abs840`` the paper's, ``rel1000`` Qwen3-VL's), read into the frame
(``v * frame_scale(coords)``) before any rule, so every threshold stays in frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from verl_ext.constants import BOX_L1_MATCH, IOU_MATCH, POINT_MATCH
from verl_ext.coords import DEFAULT_COORDS, frame_scale
from verl_ext.rewards.common import thinking_reward
from verl_ext.rewards.parsing import (
    ParsedObjects,
    ParsedResponse,
    non_repeat,
    parse_label,
    parse_objects,
    parse_response,
)

__all__ = [
    "MAX_ANSWER_FORMAT",
    "MAX_ACCURACY",
    "MAX_SCORE",
    "box_iou_matrix",
    "box_l1_matrix",
    "point_dist_matrix",
    "points_in_boxes",
    "pair_reward_matrix",
    "answer_format_reward",
    "accuracy_reward",
    "box_iou",
    "box_l1",
    "point_dist",
    "compute_score",
    "compute_score_batch",
    "score_parsed",
]

MAX_ANSWER_FORMAT = 2.0  # bbox + point per object
MAX_ACCURACY = 3.0  # IoU + L1 + point terms per matched pair
MAX_SCORE = 1.0 + MAX_ANSWER_FORMAT + MAX_ACCURACY + 1.0


# --------------------------------------------------------------------------------------------
# Geometry. The elementwise functions broadcast over leading axes (last axis = coordinates):
# ``box_iou(p[:, None], g[None])`` is the [M,N] pair matrix, ``box_iou(p[i], g[j])`` the
# flattened pairs of a whole batch (what ``compute_score_batch`` uses).
# --------------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a[..., 4]`` and ``b[..., 4]`` (x1, y1, x2, y2; inclusive pixels)."""
    wh = np.maximum(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]) + 1.0, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    return inter / (area_a + area_b - inter)


def box_l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute corner difference of boxes ``a[..., 4]`` and ``b[..., 4]``."""
    return np.abs(a - b).mean(axis=-1)


def point_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of points ``a[..., 2]`` and ``b[..., 2]``."""
    d = a - b
    return np.sqrt((d * d).sum(axis=-1))


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Is ``points[..., 2]`` inside ``boxes[..., 4]`` (borders included)? -> bool [...]."""
    return (
        (points[..., 0] >= boxes[..., 0])
        & (points[..., 0] <= boxes[..., 2])
        & (points[..., 1] >= boxes[..., 1])
        & (points[..., 1] <= boxes[..., 3])
    )


def box_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every pred box [M,4] with every label box [N,4] -> [M,N]."""
    return box_iou(pred[:, None, :], gt[None, :, :])


def box_l1_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean corner L1 of every pred box [M,4] with every label box [N,4] -> [M,N]."""
    return box_l1(pred[:, None, :], gt[None, :, :])


def point_dist_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Distance of every pred point [M,2] to every label point [N,2] -> [M,N]."""
    return point_dist(pred[:, None, :], gt[None, :, :])


def _pair_reward(pb, pp, box_ok, point_ok, gb, gp) -> np.ndarray:
    """Per-pair reward in {0,1,2,3} (= 3 − the public cost); inputs broadcast against each other.

    ``box_ok``: the predicted box is valid; ``point_ok``: the predicted point is valid and inside
    its own (valid) predicted box.
    """
    iou_hit = box_iou(pb, gb) > IOU_MATCH
    l1_hit = box_l1(pb, gb) < BOX_L1_MATCH
    point_hit = point_dist(pp, gp) < POINT_MATCH
    return (iou_hit & box_ok).astype(np.float64) + (l1_hit & box_ok) + (point_hit & point_ok)


def _point_ok(pred: ParsedObjects) -> np.ndarray:
    return pred.point_valid & pred.box_valid & points_in_boxes(pred.points, pred.boxes)


def pair_reward_matrix(pred: ParsedObjects, gt: ParsedObjects) -> np.ndarray:
    """Per-pair reward [M,N] in {0,1,2,3}; invalid parts earn nothing."""
    return _pair_reward(
        pred.boxes[:, None, :],
        pred.points[:, None, :],
        pred.box_valid[:, None],
        _point_ok(pred)[:, None],
        gt.boxes[None, :, :],
        gt.points[None, :, :],
    )


def _matched_total(reward: np.ndarray) -> float:
    """Best total of a one-to-one matching on the pair-reward matrix [M,N]."""
    m, n = reward.shape
    if m == 1 or n == 1:  # a single row/column: the optimal assignment is its best entry
        return float(reward.max())
    rows, cols = linear_sum_assignment(reward, maximize=True)
    return float(reward[rows, cols].sum())


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------
def answer_format_reward(pred: ParsedObjects, gt: ParsedObjects) -> float:
    """Mean over predicted objects of [bbox valid] + [point valid] (0..2); non-object rule."""
    if not pred.valid:
        return 0.0
    m = len(pred)
    if m == 0:
        return MAX_ANSWER_FORMAT if len(gt) == 0 else 0.0
    return float((np.count_nonzero(pred.box_valid) + np.count_nonzero(pred.point_valid)) / m)


def accuracy_reward(pred: ParsedObjects, gt: ParsedObjects) -> float:
    """Hungarian-matched pair reward / max(M, N) (0..3); non-object rule."""
    if not pred.valid:
        return 0.0
    m, n = len(pred), len(gt)
    if m == 0 or n == 0:
        return MAX_ACCURACY if m == n else 0.0
    return _matched_total(pair_reward_matrix(pred, gt)) / max(m, n)


def score_parsed(
    resp: ParsedResponse,
    pred: ParsedObjects,
    gt: ParsedObjects,
    *,
    is_gt: bool = False,
    gt_thinking_reward: str = "zero",
    accuracy: float | None = None,
) -> dict:
    """Score already-parsed inputs (what ``compute_score`` does after parsing); ``accuracy``
    when the matched accuracy was already computed (the batched path), else it is computed."""
    thinking = thinking_reward(resp.think_format, is_gt=is_gt, gt_thinking_reward=gt_thinking_reward)
    fmt = answer_format_reward(pred, gt)
    acc = accuracy_reward(pred, gt) if accuracy is None else accuracy
    rep = non_repeat(resp.text)
    return {
        "score": thinking + fmt + acc + rep,
        "thinking_format": thinking,
        "answer_format": fmt,
        "accuracy": acc,
        "non_repeat": rep,
        "invalid_reason": pred.reason,
    }


def compute_score(
    solution_str: str,
    ground_truth: str | list,
    *,
    is_gt: bool = False,
    gt_thinking_reward: str = "zero",
    coords: str = DEFAULT_COORDS,
    **kwargs,
) -> dict:
    """Grounding / anomaly / lesion reward of one response (module docstring for the definition).

    Args:
        solution_str: the decoded response; any string (never raises for it).
        ground_truth: the label, a JSON list string (``"[]"`` = no object). A malformed label
            raises ValueError (data bug).
        is_gt: the row is the injected ground-truth response (docs/METHOD.md §3.2).
        gt_thinking_reward: ``"zero"`` (thinking_format is 0 for GT rows) or ``"full"`` (1).
        coords: the convention of the response's coordinates (``verl_ext.coords``; default the
            paper's ``abs840``); the label is always in the 840 frame.

    Returns:
        dict with ``score`` (float, 0..7) and ``thinking_format``, ``answer_format``,
        ``accuracy``, ``non_repeat`` (floats), ``invalid_reason`` (str, "" when valid).
    """
    gt = parse_label(ground_truth)
    resp = parse_response(solution_str)
    pred = parse_objects(resp.answer, scale=frame_scale(coords))
    return score_parsed(resp, pred, gt, is_gt=is_gt, gt_thinking_reward=gt_thinking_reward)



def compute_score_batch(
    solution_strs: Sequence[str],
    ground_truths: Sequence[str | list],
    *,
    is_gt: Sequence[bool] | None = None,
    gt_thinking_reward: str = "zero",
    coords: str = DEFAULT_COORDS,
) -> list[dict]:
    """``compute_score`` for many responses at once; same results, one numpy pass for all pairs.

    Every (prediction, label) pair of the whole batch is scored in one vectorised call; only the
    Hungarian step stays per response (and is skipped for one-row/one-column problems).
    """
    if len(solution_strs) != len(ground_truths):
        raise ValueError(f"{len(solution_strs)} responses but {len(ground_truths)} labels")
    n_rows = len(solution_strs)
    is_gt = [False] * n_rows if is_gt is None else [bool(x) for x in is_gt]
    scale = frame_scale(coords)
    parsed = []
    for sol, label in zip(solution_strs, ground_truths, strict=True):
        resp = parse_response(sol)
        parsed.append((resp, parse_objects(resp.answer, scale=scale), parse_label(label)))

    # flatten every pair of every response that needs a matrix
    need = [k for k, (_, pred, gt) in enumerate(parsed) if pred.valid and len(pred) and len(gt)]
    totals: dict[int, float] = {}
    if need:
        preds = [parsed[k][1] for k in need]
        gts = [parsed[k][2] for k in need]
        pb = np.concatenate([p.boxes for p in preds])
        pp = np.concatenate([p.points for p in preds])
        box_ok = np.concatenate([p.box_valid for p in preds])
        point_ok = np.concatenate([_point_ok(p) for p in preds])
        gb = np.concatenate([g.boxes for g in gts])
        gp = np.concatenate([g.points for g in gts])
        pi: list[int] = []  # pred row of each pair
        gi: list[int] = []  # label row of each pair
        bounds = [0]
        po = go = 0
        for p, g in zip(preds, gts, strict=True):
            m, n = len(p), len(g)
            for a in range(po, po + m):
                pi.extend([a] * n)
                gi.extend(range(go, go + n))
            po += m
            go += n
            bounds.append(len(pi))
        reward = _pair_reward(pb[pi], pp[pi], box_ok[pi], point_ok[pi], gb[gi], gp[gi])
        for j, k in enumerate(need):
            m, n = len(preds[j]), len(gts[j])
            block = reward[bounds[j] : bounds[j + 1]].reshape(m, n)
            totals[k] = _matched_total(block) / max(m, n)

    # rows not in totals: an invalid answer or the non-object rule (accuracy computed per row)
    out = [
        score_parsed(resp, pred, gt, is_gt=bool(is_gt[k]), gt_thinking_reward=gt_thinking_reward,
                     accuracy=totals.get(k))
        for k, (resp, pred, gt) in enumerate(parsed)
    ]
    return out
