"""Parity of the evaluation with the public evaluation code, case by case.

Every expected value below is computed by hand from the public formulas; each test names the
public file and function it follows. Public repositories: JIA-Lab-research/VisionReasoner
(= dvlab-research/VisionReasoner; Seg-Zero's scripts are the same), henghuiding/ReLA,
dvlab-research/LISA, lupantech/MathVista. The last section reproduces issue 14 items 8-12 end
to end through the CLI (item 13: tests/test_evaluate.py::test_generate_several_datasets_sharing_ids).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from recipe.visurf import eval_scoring as S
from recipe.visurf import evaluate as E
from verl_ext.eval_protocols import EvalProtocol
from verl_ext.eval_protocols import anomaly as A
from verl_ext.eval_protocols import grounding as G
from verl_ext.eval_protocols import gui as U
from verl_ext.eval_protocols import math as MP
from verl_ext.eval_protocols.answers import read_objects, says_no_target
from verl_ext.rewards.parsing import parse_objects, parse_response

approx = pytest.approx
ASSETS = Path(__file__).parent / "assets"


def _ans(response: str):
    """The ObjectAnswer of a full response."""
    return read_objects(parse_objects(parse_response(response).answer))


def _resp(answer) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return f"<think>t</think><answer>{text}</answer>"


def _obj(box, point=None):
    return {"bbox_2d": box, "point_2d": point or [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]}


# ============================================================================================
# Reading an answer — VisionReasoner vision_reasoner/models/visurf_model.py extract_bbox_points_think
# ============================================================================================
READ_CASES = [  # (answer, boxes read, points read, well-formed [])
    ([_obj([1, 2, 3, 4], [2, 3])], 1, 1, False),
    ([], 0, 0, True),
    ("not json", 0, 0, False),  # json.loads fails -> except: no boxes
    ({"bbox_2d": [1, 2, 3, 4]}, 0, 0, False),  # a dict: items are its keys -> TypeError -> no boxes
    ([_obj([1, 2, 3, 4], [2, 3]), {"point_2d": [5, 5]}], 0, 0, False),  # one KeyError voids every box
    ([{"bbox_2d": [1, 2, 3, 4]}], 1, 0, False),  # boxes read, the points comprehension fails
    ([_obj([1, 2, 3, 4], [2, 3]), {"bbox_2d": [5, 6, 7, 8]}], 2, 0, False),
    ([{"bbox_2d": ["1", 2, 3, 4], "point_2d": [2, 3]}], 0, 0, False),  # "1" * x_factor -> TypeError
    ([{"bbox_2d": [1, 2, 3], "point_2d": [2, 3]}], 0, 0, False),  # bbox_2d[3] -> IndexError
    ([{"point_2d": [5, 5]}], 0, 0, False),  # no bbox_2d
    ([_obj([1, 2, 3, 4], [2, 3]), 5], 0, 0, False),  # 5["bbox_2d"] -> TypeError
]


@pytest.mark.parametrize("answer,n_boxes,n_points,empty", READ_CASES)
def test_read_objects_all_or_nothing(answer, n_boxes, n_points, empty):
    """visurf_model.py extract_bbox_points_think: boxes all-or-nothing, then points all-or-nothing."""
    a = _ans(_resp(answer))
    assert (len(a.boxes), len(a.points), a.is_empty_list) == (n_boxes, n_points, empty)
    assert a.has_boxes == (n_boxes > 0)


def test_read_objects_without_answer_tags():
    """extract_bbox_points_think: no <answer> match -> no boxes, no points."""
    a = _ans("<think>I see nothing</think>")
    assert len(a.boxes) == 0 and len(a.points) == 0 and not a.is_empty_list


# ============================================================================================
# "No target" — VisionReasoner evaluation/evaluation_segmentation.py process_batch
#   non_object = int(gt_mask.sum() == 0 and len(bboxes) == 0)
# ============================================================================================
NO_TARGET_CASES = [  # (response, public, strict)
    (_resp([]), True, True),
    (_resp("nothing matches"), True, False),  # unparseable: no boxes (the issue's item 8)
    ("<think>t</think>", True, False),  # no answer tags at all
    (_resp([{"point_2d": [5, 5]}]), True, False),
    (_resp([_obj([0, 0, 9, 9])]), False, False),
    (_resp([{"bbox_2d": [0, 0, 9, 9]}]), False, False),  # a box without a point is still a box
    (_resp({"a": 1}), True, False),
    (_resp([_obj([0, 0, 9, 9]), 5]), True, False),  # one broken object voids the boxes
    (_resp("[]  "), True, True),
    (_resp([{"bbox_2d": [0, 0, 9, float("nan")], "point_2d": [1, 1]}]), True, False),  # NaN box not read
]


@pytest.mark.parametrize("response,public,strict", NO_TARGET_CASES)
def test_says_no_target(response, public, strict):
    """evaluation_segmentation.py process_batch (non_object) under the public rule; strict: only `[]`."""
    a = _ans(response)
    assert says_no_target(a, "public") is public
    assert says_no_target(a, "strict") is strict


# ============================================================================================
# Per-sample IoU / gIoU — VisionReasoner evaluation/calculate_iou_with_bbox_nonobj.py calculate_metrics
#   iou = I / U if U > 0 else 0; iou = 1 if non_object; gIoU = mean(iou)
#   (ReLA refer_evaluation.py ReferEvaluator.evaluate and LISA train_ds.py validate agree)
# ============================================================================================
B10 = [0, 0, 9, 9]  # 10 x 10 frame pixels on the raster basis
IOU_CASES = [  # (label, answer, IoU public, IoU strict)
    ([], [], 1.0, 1.0),
    ([], "garbage", 1.0, 0.0),
    ([], [_obj(B10)], 0.0, 0.0),  # I = 0, U = 100
    ([], [{"point_2d": [1, 1]}], 1.0, 0.0),
    ([], [_obj(B10), {"bbox_2d": "x"}], 1.0, 0.0),
    ([_obj(B10)], [_obj(B10)], 1.0, 1.0),
    ([_obj(B10)], [_obj([0, 0, 9, 4])], 0.5, 0.5),  # 50 / 100
    ([_obj(B10)], [], 0.0, 0.0),
    ([_obj(B10)], "garbage", 0.0, 0.0),
    ([_obj(B10), _obj([20, 0, 29, 9])], [_obj([0, 0, 29, 9])], 2 / 3, 2 / 3),  # 200 / 300
    ([_obj(B10)], [_obj(B10), _obj([20, 0, 29, 9])], 0.5, 0.5),  # 100 / 200
]


@pytest.mark.parametrize("label,answer,public,strict", IOU_CASES)
def test_per_sample_iou(label, answer, public, strict):
    """calculate_iou_with_bbox_nonobj.py calculate_metrics: per-image IoU with the non-object rule."""
    rec = {"id": "x", "data_source": "grefcoco", "ground_truth": json.dumps(label), "response": _resp(answer)}
    assert S.score_record(rec, EvalProtocol()).iou == approx(public)
    assert S.score_record(rec, EvalProtocol(non_object="strict")).iou == approx(strict)


def test_giou_is_the_mean_over_the_cases():
    """calculate_iou_with_bbox_nonobj.py: gIoU = np.mean(per-image IoU)."""
    records = [{"id": str(i), "data_source": "grefcoco", "ground_truth": json.dumps(lab), "response": _resp(ans)}
               for i, (lab, ans, _, _) in enumerate(IOU_CASES)]
    for rule, column in (("public", 2), ("strict", 3)):
        m, _ = S.score_all(records, EvalProtocol(non_object=rule))
        assert m["grefcoco"]["gIoU"] == approx(np.mean([c[column] for c in IOU_CASES]))


# ============================================================================================
# cIoU — calculate_iou_with_bbox_nonobj.py: total_intersection / total_union
#   (ReLA: a no-target sample answered "no target" adds I = U = 0, otherwise its U)
# ============================================================================================
def _gs(i, u, gt_empty=False, no_target=False, has_target=True, hit=False):
    return G.GroundingSample(i, u, gt_empty, no_target, has_target, hit)


NT_OK = _gs(0, 0, gt_empty=True, no_target=True, has_target=False, hit=True)  # non-object answered "no target"
CIOU_CASES = [
    ([_gs(50, 150)], 1 / 3),
    ([_gs(50, 150), NT_OK], 1 / 3),
    ([_gs(50, 150), _gs(0, 100, gt_empty=True)], 50 / 250),  # false positive on a non-object sample
    ([_gs(100, 100), _gs(0, 300)], 0.25),
    ([_gs(10, 20), _gs(30, 40)], 40 / 60),
    ([_gs(0, 200)], 0.0),
    ([NT_OK, NT_OK, _gs(5, 10)], 0.5),
    ([_gs(7, 7)], 1.0),
    ([_gs(0, 0, gt_empty=True, has_target=False), _gs(20, 40)], 0.5),  # strict-rule miss adds nothing to U
    ([_gs(1, 3), _gs(2, 3), _gs(3, 3)], 6 / 9),
    ([NT_OK, NT_OK], None),  # Σ U = 0: the public script prints 0; we report None + a note
]


@pytest.mark.parametrize("samples,ciou", CIOU_CASES)
def test_ciou(samples, ciou):
    """calculate_iou_with_bbox_nonobj.py calculate_metrics: cIoU = Σ intersection / Σ union."""
    m = G.grounding_metrics(samples)
    assert m["cIoU"] == (None if ciou is None else approx(ciou))
    assert ("notes" in m) is (ciou is None)


# ============================================================================================
# N-Acc and T-Acc — calculate_iou_with_bbox_nonobj.py (non_object / total_non_object_GT) and
#   ReLA gres_model/evaluation/refer_evaluation.py ReferEvaluator.evaluate (N_acc = TP / (TP + FN),
#   T_acc = TN / (TN + FP))
# ============================================================================================
NT_MISS = _gs(0, 100, gt_empty=True, no_target=False, has_target=True)  # non-object answered with boxes
T_OK = _gs(50, 100, has_target=True)  # targeted answered with boxes
T_MISS = _gs(0, 100, no_target=True, has_target=False)  # targeted answered "no target"
ACC_CASES = [  # (samples, N-Acc, T-Acc); None = not reported
    ([NT_OK], 1.0, None),
    ([NT_MISS], 0.0, None),
    ([NT_OK, NT_MISS], 0.5, None),
    ([NT_OK, NT_OK, NT_MISS], 2 / 3, None),
    ([NT_OK, T_OK], 1.0, 1.0),
    ([NT_OK, T_MISS], 1.0, 0.0),
    ([NT_MISS, T_OK, T_MISS], 0.0, 0.5),
    ([NT_OK, NT_MISS, T_OK, T_OK, T_MISS], 0.5, 2 / 3),
    ([T_OK, T_MISS], None, None),  # no non-object sample: neither is reported
    ([NT_OK, NT_OK, NT_OK, T_MISS, T_MISS, T_MISS, T_OK], 1.0, 1 / 4),
    ([NT_MISS, NT_MISS, T_OK], 0.0, 1.0),
    ([NT_OK, NT_MISS, NT_MISS, NT_MISS, T_OK, T_MISS], 0.25, 0.5),
    ([NT_OK, T_OK, T_OK, T_OK, T_OK, T_MISS], 1.0, 0.8),
    ([NT_MISS, T_MISS], 0.0, 0.0),
]


@pytest.mark.parametrize("samples,n_acc,t_acc", ACC_CASES)
def test_n_acc_and_t_acc(samples, n_acc, t_acc):
    """calculate_iou_with_bbox_nonobj.py N-Acc; ReLA ReferEvaluator.evaluate N_acc / T_acc."""
    m = G.grounding_metrics(samples)
    assert m.get("N-Acc") == (None if n_acc is None else approx(n_acc))
    assert m.get("T-Acc") == (None if t_acc is None else approx(t_acc))


def test_n_acc_issue_case_unparseable_answers():
    """Issue 14 item 8 (evaluation_segmentation.py process_batch): three non-object samples answered
    `[]`, unparseably and with a box: N-Acc 67 (public) vs 33 (strict)."""
    records = [{"id": str(i), "data_source": "grefcoco", "ground_truth": "[]", "response": r}
               for i, r in enumerate([_resp([]), "I cannot tell", _resp([_obj(B10)])])]
    public, _ = S.score_all(records, EvalProtocol())
    strict, _ = S.score_all(records, EvalProtocol(non_object="strict"))
    assert public["grefcoco"]["N-Acc"] == approx(2 / 3) and public["grefcoco"]["gIoU"] == approx(2 / 3)
    assert strict["grefcoco"]["N-Acc"] == approx(1 / 3) and strict["grefcoco"]["gIoU"] == approx(1 / 3)


# ============================================================================================
# BboxAcc — VisionReasoner evaluation/evaluation_segmentation.py compute_bbox_iou, merge_bboxes,
#   process_batch (gt_bbox = get_bbox(gt mask) = box enclosing the GT; hit when one predicted
#   box or the merged predicted box has IoU > 0.5)
# ============================================================================================
BOX_IOU_CASES = [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([10, 9, 14, 14], [10, 10, 13, 13], 9 / 20),  # the issue's small box: 0.45 (the +1 convention: 0.533)
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
    ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),  # union 0 -> 0
    ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
    ([0, 0, 4, 4], [0, 0, 2, 4], 8 / 16),
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),
    ([0, 0, 100, 50], [0, 0, 50, 100], 2500 / 7500),
]


@pytest.mark.parametrize("a,b,iou", BOX_IOU_CASES)
def test_public_box_iou(a, b, iou):
    """evaluation_segmentation.py compute_bbox_iou: area (x2-x1)*(y2-y1), no +1 pixel."""
    assert G.box_iou([a], [b])[0, 0] == approx(iou)
    assert G.box_iou([b], [a])[0, 0] == approx(iou)


def test_box_iou_differs_from_the_reward_convention():
    """The training reward keeps inclusive pixels (+1): 16/30 = 0.533 on the issue's box."""
    from verl_ext.rewards.grounding import box_iou as reward_iou

    a, b = np.array([10, 9, 14, 14.0]), np.array([10, 10, 13, 13.0])
    assert reward_iou(a, b) == approx(16 / 30) and G.box_iou([a], [b])[0, 0] == approx(0.45)


TWO_GT = [[0, 0, 10, 10], [20, 0, 30, 10]]
BBOX_HIT_CASES = [  # (predicted boxes, GT boxes, answer says "no target", public hit, strict hit)
    ([[0, 0, 10, 10]], [[0, 0, 10, 10]], False, True, True),
    ([[10, 9, 14, 14]], [[10, 10, 13, 13]], False, False, False),  # IoU 0.45
    ([[0, 0, 30, 10]], TWO_GT, False, True, False),  # one box covering two GT objects
    ([[0, 0, 9, 10], [11, 0, 20, 10]], [[0, 0, 20, 10]], False, True, False),  # two boxes, one GT box (merged: 1.0)
    ([], [], True, True, True),
    ([[0, 0, 5, 5]], [], False, False, False),
    ([], [], True, True, True),  # an unparseable answer on a non-object sample (public: "no target")
    (TWO_GT, TWO_GT, False, True, True),  # each box 1/3 with the enclosing GT box, merged box 1.0
    ([[500, 500, 600, 600], [0, 0, 10, 10]], [[0, 0, 10, 10]], False, True, False),  # one good box suffices
    ([[0, 0, 10, 4], [0, 6, 10, 10]], [[0, 0, 10, 10]], False, True, False),  # 0.4 each, merged 1.0
    ([], [[0, 0, 10, 10]], True, False, False),
    ([[0, 0, 5, 10]], [[0, 0, 10, 10]], False, False, False),  # IoU exactly 0.5 is not > 0.5
]


@pytest.mark.parametrize("pred,gt,no_target,public,strict", BBOX_HIT_CASES)
def test_bbox_hit(pred, gt, no_target, public, strict):
    """evaluation_segmentation.py process_batch + merge_bboxes; strict = our one-to-one rule."""
    assert G.bbox_hit_public(pred, gt, no_target) is public
    assert G.bbox_hit_matched(pred, gt, no_target) is strict


def test_bbox_hit_matched_is_an_optimal_assignment():
    """The strict rule (ours) matches one-to-one optimally: greedy would strand GT box B."""
    gt = [[0, 0, 10, 10], [1, 0, 11, 10]]
    p1, p2 = [0.5, 0, 10.5, 10], [-3, 0, 7, 10]
    iou = G.box_iou([p1, p2], gt)
    assert iou[0, 0] > 0.5 and iou[0, 1] > 0.5 and iou[1, 0] > 0.5 and iou[1, 1] < 0.5
    assert G.bbox_hit_matched([p1, p2], gt, False)
    assert not G.bbox_hit_matched([p2, p2], gt, False)  # p2 fits only A; its copy cannot take B


def test_enclosing_box():
    """evaluation_segmentation.py merge_bboxes."""
    assert G.enclosing_box(TWO_GT).tolist() == [0, 0, 30, 10]
    assert G.enclosing_box([]) is None


# ============================================================================================
# GUI — VisionReasoner evaluation/evaluation_gui.py process_batch + calculate_gui_acc.py
# ============================================================================================
GUI_BOX = [10, 10, 20, 20]
GUI_CASES = [  # (answer, GT element box, hit)
    ([{"bbox_2d": [0, 0, 100, 100], "point_2d": [15, 15]}], GUI_BOX, True),
    ([{"bbox_2d": [0, 0, 100, 100], "point_2d": [20, 10]}], GUI_BOX, True),  # border included
    ([{"bbox_2d": [12, 12, 18, 18], "point_2d": [21, 15]}], GUI_BOX, False),  # the point decides, not the box
    ([{"bbox_2d": [10, 10, 20, 20]}], [14, 14, 16, 16], True),  # no point_2d: the box centre (item 10)
    ([{"bbox_2d": [10, 10, 21, 21]}], [15, 15, 15, 15], True),  # centre int(15.5) = 15
    ([{"bbox_2d": [0, 0, 10, 10], "point_2d": [100, 100]}, {"bbox_2d": [40, 40, 60, 60]}],
     [45, 45, 55, 55], True),  # one point missing: every box centre is used
    ([{"bbox_2d": [40, 40, 60, 60], "point_2d": [0, 0]}], [45, 45, 55, 55], False),  # points present: no centres
    ([{"point_2d": [15, 15]}], GUI_BOX, True),  # our point-only prompt (extension)
    ("garbage", GUI_BOX, False),
    ([{"bbox_2d": [0, 0, 1, 1], "point_2d": [0, 0]}, {"bbox_2d": [0, 0, 1, 1], "point_2d": [11, 19]}], GUI_BOX, True),
    ([], GUI_BOX, False),
]


@pytest.mark.parametrize("answer,box,hit", GUI_CASES)
def test_gui_accuracy(answer, box, hit):
    """evaluation_gui.py process_batch: points, else int box centres; b_x1 <= x <= b_x2 and b_y1 <= y <= b_y2."""
    assert U.gui_hit(_ans(_resp(answer)), box) is hit


def test_gui_box_centres():
    """evaluation_gui.py: [int((x1 + x2) / 2), int((y1 + y2) / 2)]."""
    assert U.box_centres([[10, 10, 21, 23], [0, 0, 1, 1]]).tolist() == [[15, 16], [0, 0]]


# ============================================================================================
# Anomaly — VisionReasoner evaluation/evaluation_anomaly.py process_batch + calculate_acc_auc.py
# ============================================================================================
ANOMALY_CASES = [  # (answer, label anomalous, score public, score strict)
    ([_obj(B10)], True, 1, 1),
    ([_obj(B10)], False, 1, 1),
    ([], False, 0, 0),
    ([], True, 0, 0),
    ("garbage", False, 0, 1),  # public: no boxes = normal (correct); strict: the wrong decision
    ("garbage", True, 0, 0),  # wrong under both
    ([{"point_2d": [1, 1]}], False, 0, 1),
    ([{"point_2d": [1, 1]}], True, 0, 0),
    ([{"bbox_2d": [1, 1, 5, 5]}], False, 1, 1),  # boxes, no points: anomalous (public SAM step: EVALUATION.md)
    (_resp([]).replace("[]", "[] extra"), False, 0, 1),  # not JSON
]


@pytest.mark.parametrize("answer,anomalous,public,strict", ANOMALY_CASES)
def test_anomaly_score(answer, anomalous, public, strict):
    """evaluation_anomaly.py: anomaly_pred > 0 iff boxes (their SAM masks) were predicted."""
    response = answer if isinstance(answer, str) and answer.startswith("<think>") else _resp(answer)
    a = _ans(response)
    assert A.anomaly_score(a, anomalous, "public") == public
    assert A.anomaly_score(a, anomalous, "strict") == strict


AUC_CASES = [  # (labels, binary scores, Acc, AUC) — calculate_acc_auc.py calculate_metrics
    ([0, 0, 1, 1], [0, 1, 1, 1], 0.75, 0.75),
    ([0, 1], [0, 1], 1.0, 1.0),
    ([0, 1], [1, 0], 0.0, 0.0),
    ([0, 1], [1, 1], 0.5, 0.5),
    ([0, 0, 1], [0, 0, 0], 2 / 3, 0.5),
    ([0, 0, 0, 1, 1], [1, 0, 0, 1, 0], 0.6, (1 + 0.5 - 1 / 3) / 2),  # binary score: (1 + TPR - FPR) / 2
    ([1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1], 5 / 6, (1 + 1 - 0.25) / 2),
    ([0, 0], [0, 1], 0.5, None),  # one class: the public script cannot compute AUC
    ([1, 1, 1], [1, 0, 1], 2 / 3, None),
    ([0, 1, 0, 1], [0, 0, 0, 0], 0.5, 0.5),
]


@pytest.mark.parametrize("labels,scores,acc,auc", AUC_CASES)
def test_anomaly_acc_and_auc(labels, scores, acc, auc):
    """calculate_acc_auc.py: Acc = mean(int(pred > 0) == label); AUC = roc_auc_score(labels, pred > 0)."""
    m = A.anomaly_metrics(labels, scores)
    assert m["Acc"] == approx(acc)
    assert m["AUC"] == (None if auc is None else approx(auc))
    assert ("notes" in m) is (auc is None)


# ============================================================================================
# Math, mathverify protocol (the training reward's rule, verl_ext/rewards/math.py answers_match)
# ============================================================================================
MATHVERIFY_CASES = [  # (answer, label, choices, correct)
    ("0.5", "\\frac{1}{2}", None, True),
    ("3", "3", None, True),
    ("4", "3", None, False),
    (None, "3", None, False),
    ("  ", "3", None, False),
    ("B", "B", ["12", "15", "20"], True),
    ("(b)", "B", ["12", "15", "20"], True),
    ("15", "B", ["12", "15", "20"], True),  # the option text
    ("A", "B", ["12", "15", "20"], False),
    ("12", "B", ["12", "15", "20"], False),
    ("B", "15", ["12", "15", "20"], True),  # a letter against an option-text label
]


@pytest.mark.parametrize("answer,label,choices,correct", MATHVERIFY_CASES)
def test_math_mathverify(answer, label, choices, correct):
    """verl_ext/rewards/math.py answers_match (the reward's rule, reused by evaluation)."""
    assert MP.mathverify_correct(answer, label, choices) is correct


# ============================================================================================
# Math, mathvista protocol — MathVista evaluation/calculate_score.py normalize_extracted_answer,
#   get_most_similar, safe_equal, on real testmini records (tests/assets)
# ============================================================================================
TESTMINI = {r["pid"]: r for r in json.loads((ASSETS / "mathvista_testmini_records.json").read_text())["records"]}
MATHVISTA_CASES = [  # (pid, extraction, correct)
    ("1", "1.2", True),  # float, precision 1
    ("1", "1.20", True),  # str(round(1.2, 1))
    ("1", "1.25", True),  # round(1.25, 1) == 1.2
    ("1", "1.3", False),
    ("1", "about 1.2", False),  # float() fails -> None
    ("2", "1000", True),  # integer
    ("2", "1000.0", True),  # str(int(float(x)))
    ("2", "1,000", False),
    ("3", "C", True),  # option letter
    ("3", "(C) 145°", True),  # "(C)" -> "C"
    ("3", "c", False),  # lower case is not an option letter; nearest by edit distance: all 4 -> first, 135°
    ("3", "145", True),  # nearest choice: 145° (distance 1)
    ("3", "145 degrees", True),  # distance 8 to 145°, 9 to the others
    ("3", "", False),  # empty extraction -> nearest = first option
    ("5", "97°", True),
    ("5", "B", False),  # B = 102
    ("7", "Quarter", True),  # nearest: quarter (1)
    ("7", "quarter to", False),  # an exact other option
    ("8", "Yes", True),
    ("10", "E", True),  # options are letters themselves
    ("108", "51.04", True),  # float, precision 2
    ("108", "51.041", True),
    ("108", "51.0", False),
    ("225", "[0, 2, 0, 2, 1, 7, 1, 2, 0, 3, 0, 6]", True),  # list: str(x)
    ("225", "[0,2,0,2,1,7,1,2,0,3,0,6]", False),
]


def _mathvista_label(rec):
    """How data_prep writes a MathVista record: the option letter for multiple choice, else the answer."""
    if rec["question_type"] == "multi_choice":
        return chr(65 + rec["choices"].index(rec["answer"]))
    return rec["answer"]


@pytest.mark.parametrize("pid,extraction,correct", MATHVISTA_CASES)
def test_math_mathvista(pid, extraction, correct):
    """calculate_score.py normalize_extracted_answer + safe_equal (testmini fields from the row)."""
    rec = TESTMINI[pid]
    meta = MP.mathvista_meta(_mathvista_label(rec), rec["choices"], rec)
    assert (meta.question_type, meta.answer_type, meta.precision) == (
        rec["question_type"], rec["answer_type"], rec["precision"])
    assert MP.mathvista_correct(extraction, _mathvista_label(rec), rec["choices"], meta) is correct


@pytest.mark.parametrize("pid", sorted(TESTMINI))
def test_mathvista_meta_inferred_from_the_label(pid):
    """Rows without the testmini fields: question_type / answer_type / precision inferred from the label."""
    rec = TESTMINI[pid]
    meta = MP.mathvista_meta(_mathvista_label(rec), rec["choices"], None)
    expected_type = "text" if rec["answer_type"] == "list" else rec["answer_type"]  # a list label reads as text
    assert (meta.question_type, meta.answer_type, meta.precision) == (rec["question_type"], expected_type,
                                                                       rec["precision"])


EDIT_CASES = [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("flaw", "lawn", 2),
              ("145°", "135°", 1), ("c", "135°", 4), ("145 degrees", "145°", 8), ("abc", "", 3),
              ("intention", "execution", 5), ("quarter", "quarter to", 3)]


@pytest.mark.parametrize("a,b,d", EDIT_CASES)
def test_edit_distance(a, b, d):
    """calculate_score.py get_most_similar uses Levenshtein.distance."""
    assert MP.edit_distance(a, b) == d == MP.edit_distance(b, a)


# ============================================================================================
# Math, visionreasoner protocol — VisionReasoner vision_reasoner/models/visurf_model.py
#   extract_math_answer (mathruler extract_boxed_content), evaluation/evaluation_math.py
#   process_batch, evaluation/calculate_math_acc.py calculate_metrics
# ============================================================================================
BOXED_CASES = [
    ("<think>x</think>\\boxed{2}", "2"),
    ("a \\boxed{1} b \\boxed{2}", "2"),  # the last one
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("no box here", ""),
    ("\\boxed{1} then \\boxed{2", "None"),  # the last never closes
    ("\\boxed{ 3 }", "3"),
    ("<think>x</think><answer>5</answer>", ""),  # <answer> tags are not read
    ("\\boxed{", ""),  # the regex needs a closing brace
    ("\\boxed{a}{b}", "a"),
    ("x\\boxed{{1}}", "{1}"),
]


@pytest.mark.parametrize("text,answer", BOXED_CASES)
def test_visionreasoner_boxed(text, answer):
    """visurf_model.py extract_math_answer + mathruler extract_boxed_content."""
    assert MP.last_boxed_public(text) == answer


VR_CHOICES = ["12", "15", "20"]
VR_PREDICTION_CASES = [("B", "15"), ("b) 15", "15"), ("", ""), ("15", ""), ("`", "20"), ("d", ""),
                       ("a", "12"), (" C ", "20"), ("_", "15"), ("^", "12")]


@pytest.mark.parametrize("answer,prediction", VR_PREDICTION_CASES)
def test_visionreasoner_option_mapping(answer, prediction):
    """evaluation_math.py process_batch: choices[ord(answer.strip().lower()[0]) - ord('a')], '' on error."""
    assert MP.visionreasoner_prediction(answer, VR_CHOICES) == prediction


VR_CORRECT_CASES = [("2", "2", None, True), ("\\frac{1}{2}", "0.5", None, True), ("B", "B", VR_CHOICES, True),
                    ("3", "4", None, False), ("", "3", None, False), ("A", "B", VR_CHOICES, False),
                    ("2\\sqrt{3}", "2\\sqrt{3}", None, True), ("None", "3", None, False),
                    ("145°", "145°", None, True), ("15", "B", VR_CHOICES, False)]  # "1" -> no option


@pytest.mark.parametrize("answer,label,choices,correct", VR_CORRECT_CASES)
def test_visionreasoner_math_verify(answer, label, choices, correct):
    """calculate_math_acc.py: verify(parse('$pred$', [String, Latex, Expr]), parse('$gt$'))."""
    assert MP.visionreasoner_correct(answer, label, choices) is correct


# ============================================================================================
# Issue 14 items 8-12 end to end (score-only CLI): each failed before the fix
# ============================================================================================
def _run(tmp_path, lines, *flags):
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / ("out" + "".join(f.strip("-") for f in flags))
    assert E.main(["--predictions", str(path), "--out", str(out), *flags]) == 0
    return json.loads((out / E.METRICS).read_text()), (out / E.REPORT).read_text()


def _line(id_, ds, gt, response, **extra):
    return {"id": id_, "data_source": ds, "ground_truth": gt if isinstance(gt, str) else json.dumps(gt),
            "response": response, **extra}


def test_item8_unparseable_non_object_answer_counts_as_no_boxes(tmp_path):
    lines = [_line("n1", "grefcoco", [], _resp([])), _line("n2", "grefcoco", [], "I am not sure."),
             _line("n3", "grefcoco", [], _resp([_obj(B10)]))]
    m, report = _run(tmp_path, lines)
    assert m["grefcoco"]["N-Acc"] == approx(2 / 3) and m["grefcoco"]["gIoU"] == approx(2 / 3)
    m, report = _run(tmp_path, lines, "--non-object-rule", "strict")
    assert m["grefcoco"]["N-Acc"] == approx(1 / 3) and "non-object rule `strict`" in report


def test_item9_bbox_acc_public_rule(tmp_path):
    lines = [
        _line("a", "grefcoco", [_obj([0, 0, 10, 10]), _obj([20, 0, 30, 10])], _resp([_obj([0, 0, 30, 10])])),
        _line("b", "refcocog", [_obj([0, 0, 20, 10])], _resp([_obj([0, 0, 9, 10]), _obj([11, 0, 20, 10])])),
        _line("c", "refcocog", [_obj([10, 10, 13, 13])], _resp([_obj([10, 9, 14, 14])])),
    ]
    m, report = _run(tmp_path, lines)
    assert m["grefcoco"]["BboxAcc"] == 1.0  # one box covering both GT objects
    assert m["refcocog"]["BboxAcc"] == 0.5  # two boxes for one GT box: hit; the 0.45 small box: miss
    assert "compute_bbox_iou" in report


def test_item10_gui_box_without_point_scores_its_centre(tmp_path):
    lines = [_line("g1", "omniact", [_obj([10, 10, 20, 20])], _resp([{"bbox_2d": [12, 12, 18, 18]}]))]
    m, _ = _run(tmp_path, lines)
    assert m["omniact"]["Acc"] == 1.0


def test_item11_anomaly_one_rule_for_unparseable_answers(tmp_path):
    lines = [_line("a1", "realiad", [], "the product looks fine"),
             _line("a2", "realiad", [_obj([0, 0, 50, 50])], _resp([_obj([0, 0, 50, 50])]))]
    m, _ = _run(tmp_path, lines)
    r = m["realiad"]  # public: the unparseable answer on the normal image is "normal" in every metric
    assert (r["Acc"], r["AUC"], r["N-Acc"], r["gIoU"]) == (1.0, 1.0, 1.0, 1.0)
    m, _ = _run(tmp_path, lines, "--non-object-rule", "strict")
    r = m["realiad"]  # strict: wrong in every metric
    assert (r["Acc"], r["AUC"], r["N-Acc"], r["gIoU"]) == (0.5, 0.5, 0.0, 0.5)


def test_item12_math_protocols_named_in_the_report(tmp_path):
    rec = TESTMINI["3"]
    lines = [_line("3", "mathvista", "C", _resp("145"), choices=rec["choices"],
                   question_type="multi_choice", answer_type="text"),
             _line("1", "mathvista", "1.2", _resp("1.20"), answer_type="float", precision=1)]
    m, report = _run(tmp_path, lines, "--math-protocol", "mathvista")
    assert m["mathvista"]["Acc"] == 1.0  # nearest choice; precision rounding
    assert "math `mathvista`" in report and "calculate_score.py" in report
    assert m[E.PROTOCOL_KEY]["options"]["math"] == "mathvista"
    m, report = _run(tmp_path, lines, "--math-protocol", "mathverify")
    assert m["mathvista"]["Acc"] == 0.5  # "145" is not option C's text "145°" for math-verify's string rule
    vr = [_line("3", "mathvista", "C", "<think>t</think>\\boxed{C}", choices=rec["choices"]),
          _line("1", "mathvista", "1.2", "<think>t</think>\\boxed{1.2}")]
    m, report = _run(tmp_path, vr, "--math-protocol", "visionreasoner")
    assert m["mathvista"]["Acc"] == 1.0 and "calculate_math_acc.py" in report


# ============================================================================================
# Preset `visionreasoner` (issue 19) — the public VisionReasoner evaluation end to end.
# Public code read: JIA-Lab-research/VisionReasoner at c013132276d85a3a3a4f03a6cd78d3e901e0128d.
#   reader  vision_reasoner/models/visurf_model.py  extract_bbox_points_think, lines 129-150
#   masks   vision_reasoner/models/visurf_model.py  generate_masks, lines 214-241
#   seg     evaluation/evaluation_segmentation.py   compute_iou 34-39, compute_bbox_iou 41-62,
#           merge_bboxes 119-137, process_batch 180-208
#   metrics evaluation/calculate_iou_with_bbox_nonobj.py 47-49 (IoU), 77 (gIoU), 79 (cIoU),
#           81 (BboxAcc), 87 (N-Acc)
#   anomaly evaluation/evaluation_anomaly.py 148-149; evaluation/calculate_acc_auc.py 42, 46, 65-75
#   gui     evaluation/evaluation_gui.py 123-135; evaluation/calculate_gui_acc.py 37
#   math    visurf_model.py extract_math_answer 184-191; evaluation/evaluation_math.py 93;
#           evaluation/calculate_math_acc.py 70, 79-83
# Expected values are worked out by hand from those lines (comments); `_public_*` below is a
# test-only transcription of the same lines (regex, json, plain lists) used to cross-check the
# preset on the whole mixed set, independently of the code under test.
# ============================================================================================
VR = E.preset("visionreasoner")
PROJECT = E.preset("project")
LONG = "w " * 10_000  # 20,000 characters: an answer after it is past the project's 20,000-character cut


def _vr(response: str):
    """The ObjectAnswer of the preset's reader (answers.read_public)."""
    from verl_ext.eval_protocols.answers import read_public

    return read_public(response)


PUBLIC_READ_CASES = [  # (response, boxes, points) as extract_bbox_points_think returns them (x_factor 1)
    (_resp([_obj([1, 2, 3, 4], [2, 3])]), [[1, 2, 3, 4]], [[2, 3]]),
    # line 129: re.search takes the FIRST <answer>…</answer>
    ("<answer>[{\"bbox_2d\": [1, 1, 5, 5], \"point_2d\": [2, 2]}]</answer><answer>[]</answer>",
     [[1, 1, 5, 5]], [[2, 2]]),
    # line 129: the first <answer> runs to the first </answer>: "x <answer>[…]" is not JSON -> nothing
    ("<answer>x <answer>[{\"bbox_2d\": [1, 1, 5, 5], \"point_2d\": [2, 2]}]</answer>", [], []),
    # no length cut: the answer after 20,000 characters is read
    ("<think>" + LONG + "</think>" + _resp([_obj([1, 2, 3, 4], [2, 3])]), [[1, 2, 3, 4]], [[2, 3]]),
    # lines 140-148: int(v * x_factor + 0.5): 1.5 -> 2, 2.4 -> 2, -0.7 -> int(-0.2) = 0, -3.7 -> -3
    (_resp([{"bbox_2d": [1.5, 2.4, -0.7, -3.7], "point_2d": [99.6, 0.49]}]), [[2, 2, 0, -3]], [[100, 0]]),
    # no ordering, no clipping: a swapped and an out-of-frame box are kept (-60 -> int(-59.5) = -59)
    (_resp([_obj([9, 9, 0, 0], [4, 4]), _obj([-60, 0, 900, 39], [10, 10])]), [[9, 9, 0, 0], [-59, 0, 900, 39]],
     [[4, 4], [10, 10]]),
    # True * x_factor = 1.0, False -> 0
    (_resp([{"bbox_2d": [True, False, 9, 9], "point_2d": [True, 4]}]), [[1, 0, 9, 9]], [[1, 4]]),
    # item['bbox_2d'][0..3] / ['point_2d'][0..1]: extra numbers ignored (5-number box, 3-number point)
    (_resp([{"bbox_2d": [0, 0, 9, 9, 77], "point_2d": [4, 4, 1]}]), [[0, 0, 9, 9]], [[4, 4]]),
    # the points comprehension fails after the boxes were assigned: boxes stay, no points
    (_resp([{"bbox_2d": [0, 0, 9, 9]}]), [[0, 0, 9, 9]], []),
    (_resp([{"bbox_2d": [0, 0, 9, 9], "point_2d": [4]}]), [[0, 0, 9, 9]], []),  # point_2d[1]: IndexError
    (_resp([{"point_2d": [4, 4]}]), [], []),  # KeyError 'bbox_2d'
    ("<answer>[{\"bbox_2d\": [0, 0, 9, NaN], \"point_2d\": [4, 4]}]</answer>", [], []),  # int(nan): ValueError
    ("<answer>[{\"bbox_2d\": [0, 0, 9, Infinity], \"point_2d\": [4, 4]}]</answer>", [], []),  # int(inf): OverflowError
    (_resp([{"bbox_2d": [0, 0, 9, None], "point_2d": [4, 4]}]), [], []),  # None * float: TypeError
    (_resp([{"bbox_2d": [0, 0, 9, "9"], "point_2d": [4, 4]}]), [], []),  # "9" * float: TypeError
    (_resp({}), [], []),  # iterating an empty dict: no items, no error
    (_resp([_obj([0, 0, 1, 1], [0, 0])] * 130), [[0, 0, 1, 1]] * 130, [[0, 0]] * 130),  # no object limit
]


@pytest.mark.parametrize("response,boxes,points", PUBLIC_READ_CASES)
def test_public_reader(response, boxes, points):
    """visurf_model.py extract_bbox_points_think lines 129-150 (see each case's comment)."""
    a = _vr(response)
    assert a.boxes.tolist() == boxes and a.points.tolist() == points
    assert a.has_boxes == bool(boxes)
    assert len(a.loose_points) == 0  # no point-only extension under the public reader


def test_public_reader_first_block_equals_the_public_regex():
    """answers.first_answer_block (str.find) = visurf_model.py line 129's re.search(...).group(1)."""
    import random

    from verl_ext.eval_protocols.answers import first_answer_block

    rx = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
    rng = random.Random(0)
    parts = ["<answer>", "</answer>", " ", "\n", "\u00a0", "x", "[]", "<answer", "answer>", "\t"]
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 9)))
        m = rx.search(text)
        assert first_answer_block(text) == (m.group(1) if m else None), text


def test_public_reader_is_linear_on_pathological_text():
    """The public regex backtracks quadratically on a long whitespace run; the preset's reader does not."""
    import time

    text = "<answer>" + " " * 200_000 + "x"
    t0 = time.perf_counter()
    assert not _vr(text).has_boxes
    assert time.perf_counter() - t0 < 0.5


# --------------------------------------------------------------------------------------------
# The five undocumented differences of the default preset (issue 19), one record each, scored by
# both presets: the preset gives the public value, the project preset its own.
# --------------------------------------------------------------------------------------------
def _score(record, protocol):
    return S.score_record(record, protocol)


def test_difference_20000_character_cut():
    """Public: no cut (visurf_model.py line 129 searches the whole output). Project: cut at 20,000."""
    rec = _line("c", "grefcoco", [_obj(B10)], "<think>" + LONG + "</think><answer>" + json.dumps([_obj(B10)])
                + "</answer>")
    assert _score(rec, VR).iou == 1.0 and _score(rec, VR).correct  # I = U = 100; compute_bbox_iou 1.0 > 0.5
    assert _score(rec, PROJECT).iou == 0.0 and not _score(rec, PROJECT).correct


def test_difference_swapped_corners():
    """compute_bbox_iou([9,9,0,0], [0,0,9,9]) (evaluation_segmentation.py 41-62): intersection
    max(0, 0-9) * max(0, 0-9) = 0, union 81 + 81 -> IoU 0; merge_bboxes gives the same box: a miss.
    The project preset orders the corners (IoU 1, a hit)."""
    rec = _line("s", "grefcoco", [_obj(B10)], _resp([_obj([9, 9, 0, 0], [4, 4])]))
    assert G.box_iou([[9, 9, 0, 0]], [[0, 0, 9, 9]])[0, 0] == 0.0
    assert not _score(rec, VR).correct
    assert _score(rec, PROJECT).correct


def test_difference_out_of_frame_box():
    """-60 is read as int(-60 + 0.5) = -59 (visurf_model.py 140); compute_bbox_iou([-59,0,39,39],
    [0,0,39,39]): I = 39*39 = 1521, areas 98*39 = 3822 and 1521, U = 3822 -> 0.398: a miss. The
    project preset clips to [0, 840] first: IoU 1, a hit."""
    rec = _line("o", "grefcoco", [_obj([0, 0, 39, 39])], _resp([_obj([-60, 0, 39, 39], [10, 10])]))
    assert _vr(rec["response"]).boxes.tolist() == [[-59, 0, 39, 39]]
    assert G.box_iou([[-59, 0, 39, 39]], [[0, 0, 39, 39]])[0, 0] == approx(1521 / 3822)
    assert not _score(rec, VR).correct
    assert _score(rec, PROJECT).correct


def test_difference_boolean_coordinates():
    """[true, 0, 9, 9] is read as [1, 0, 9, 9] (True * x_factor, visurf_model.py 140): BboxAcc IoU
    (9-1)*9 / 81 = 72/81 > 0.5, a hit; raster I = 90 (x 1..9, y 0..9), U = 100, IoU 0.9. On a
    non-object sample the same answer names a box: non_object = 0, gIoU 0. The project preset
    rejects booleans: no box (a miss, IoU 0; on the non-object sample "no target", IoU 1)."""
    box = [{"bbox_2d": [True, 0, 9, 9], "point_2d": [4, 4]}]
    rec = _line("b", "grefcoco", [_obj(B10)], _resp(box))
    vr = _score(rec, VR)
    assert vr.correct and vr.iou == approx(0.9)
    assert not _score(rec, PROJECT).correct and _score(rec, PROJECT).iou == 0.0
    empty = _line("b0", "grefcoco", [], _resp(box))
    assert _score(empty, VR).iou == 0.0 and not _score(empty, VR).sample.no_target
    assert _score(empty, PROJECT).iou == 1.0


def test_difference_three_number_points():
    """A 3-number point_2d is read as its first two numbers (visurf_model.py 145-148); evaluation_gui.py
    123-126 then clicks it: (2, 2) is inside [0, 0, 4, 4]: a hit. The project preset rejects the point,
    so the box centre (10, 10) is clicked: a miss."""
    rec = _line("p", "omniact", [_obj([0, 0, 4, 4], [2, 2])],
                _resp([{"bbox_2d": [0, 0, 20, 20], "point_2d": [2, 2, 9]}]))
    assert _score(rec, VR).correct
    assert not _score(rec, PROJECT).correct


def test_difference_gui_point_rounding():
    """The public point is int(99.6 + 0.5) = 100 (visurf_model.py 146), inside b_x1 = 100
    (evaluation_gui.py 133): a hit. The project preset keeps 99.6 < 100: a miss."""
    rec = _line("r", "omniact", [_obj([100, 0, 200, 100], [150, 50])],
                _resp([{"bbox_2d": [100, 0, 200, 100], "point_2d": [99.6, 50]}]))
    assert _score(rec, VR).correct
    assert not _score(rec, PROJECT).correct


def test_boxes_without_points_make_no_mask():
    """generate_masks (visurf_model.py 233-239): boxes without points are predicted but never OR-ed
    in, so the mask is empty: grounding I = 0, U = 100 (IoU 0) while BboxAcc still uses the boxes
    (hit); on a non-object sample compute_iou returns (0, 0) and non_object = 0 (IoU 0); anomaly_pred
    = 0 ("normal", evaluation_anomaly.py 148)."""
    rec = _line("n", "grefcoco", [_obj(B10)], _resp([{"bbox_2d": B10}]))
    s = _score(rec, VR)
    assert (s.sample.intersection, s.sample.union, s.iou, s.correct) == (0, 100, 0.0, True)
    assert _score(rec, PROJECT).iou == 1.0
    s = _score(_line("n0", "grefcoco", [], _resp([{"bbox_2d": B10}])), VR)
    assert (s.sample.intersection, s.sample.union, s.iou, s.correct) == (0, 0, 0.0, False)
    a = _score(_line("a", "realiad", [_obj(B10)], _resp([{"bbox_2d": B10}])), VR)
    assert a.anomaly_score == 0 and not a.correct
    assert _score(_line("a", "realiad", [_obj(B10)], _resp([{"bbox_2d": B10}])), PROJECT).anomaly_score == 1


def test_point_only_gui_answer_is_a_miss():
    """evaluation_gui.py: a point-only answer gives no boxes (KeyError 'bbox_2d'), no points, no centres."""
    rec = _line("g", "omniact", [_obj([100, 0, 200, 100], [150, 50])], _resp([{"point_2d": [150, 50]}]))
    assert not _score(rec, VR).correct
    assert _score(rec, PROJECT).correct  # the project's point-only extension


def test_object_limit():
    """No object limit in the public reader: the 121st box (IoU 1) is a hit (process_batch 187-190);
    the project reader keeps 120 tiny boxes (merged [0,0,1,1]: a miss)."""
    answer = [_obj([0, 0, 1, 1], [0, 0])] * 120 + [_obj([100, 100, 199, 199], [150, 150])]
    rec = _line("m", "grefcoco", [_obj([100, 100, 199, 199])], _resp(answer))
    s = _score(rec, VR)
    assert s.correct and (s.sample.intersection, s.sample.union) == (10_000, 10_004)
    assert not _score(rec, PROJECT).correct


def test_public_think_length():
    """calculate_*.py: mean len(think.split()) over items with a non-empty think; visurf_model.py
    returns the whole output as think (line 161, 195). Project: words inside <think>, every response."""
    recs = [_line("1", "grefcoco", [], "<think>a b</think><answer>[]</answer> c"), _line("2", "grefcoco", [], "")]
    assert S.score_all(recs, VR)[0]["grefcoco"]["think_len"] == 3.0  # "" is left out
    assert S.score_all(recs, PROJECT)[0]["grefcoco"]["think_len"] == 1.0  # (2 + 0) / 2


# --------------------------------------------------------------------------------------------
# The metric arithmetic under the preset, on one mixed set (grounding, anomaly, GUI, math)
# --------------------------------------------------------------------------------------------
G40 = [0, 0, 39, 39]
MIXED = [
    # grefcoco: (I, U, IoU, bbox hit, non_object, non_object_GT) under the public pipeline
    _line("g1", "grefcoco", [_obj(B10)], _resp([_obj(B10)])),  # 100, 100, 1, hit
    _line("g2", "grefcoco", [_obj(B10)], "<think>" + LONG + "</think><answer>" + json.dumps([_obj(B10)]) + "</answer>"),
    # ^ 100, 100, 1, hit (no cut)
    _line("g3", "grefcoco", [_obj(B10)], "<think>t</think><answer>" + json.dumps([_obj([20, 20, 29, 29])])
          + "</answer><answer>" + json.dumps([_obj(B10)]) + "</answer>"),  # first block: 0, 200, 0, miss
    _line("g4", "grefcoco", [_obj(B10)], _resp([_obj([9, 9, 0, 0], [4, 4])])),  # raster 100, 100, 1; bbox IoU 0: miss
    _line("g5", "grefcoco", [_obj(G40)], _resp([_obj([-60, 0, 39, 39], [10, 10])])),  # 1600, 1600, 1; 0.398: miss
    _line("g6", "grefcoco", [_obj(B10)], _resp([{"bbox_2d": [True, 0, 9, 9], "point_2d": [4, 4]}])),  # 90, 100, .9, hit
    _line("g7", "grefcoco", [_obj(B10)], _resp([{"bbox_2d": [0, 0, 9, 9, 5], "point_2d": [4, 4]}])),  # 100, 100, 1, hit
    _line("g8", "grefcoco", [_obj(B10)], _resp([{"bbox_2d": B10}])),  # no points, no mask: 0, 100, 0; hit
    _line("g9", "grefcoco", [], _resp([])),  # 0, 0, non_object 1 -> IoU 1; hit
    _line("g10", "grefcoco", [], "<think>t</think><answer>none</answer>"),  # json fails: as g9
    _line("g11", "grefcoco", [], _resp([{"bbox_2d": B10}])),  # boxes, empty mask: 0, 0, IoU 0, non_object 0; miss
    _line("g12", "grefcoco", [], _resp([{"bbox_2d": [False, False, True, True], "point_2d": [0, 0]}])),
    # ^ box [0,0,1,1]: 0, 4, IoU 0, non_object 0; miss
    _line("g13", "grefcoco", [_obj([100, 100, 199, 199])],
          _resp([_obj([0, 0, 1, 1], [0, 0])] * 120 + [_obj([100, 100, 199, 199], [150, 150])])),
    # ^ 10000, 10004 (4 px of the tiny boxes), hit
    # realiad: anomaly_pred > 0 iff a mask (boxes with points); label = GT has boxes
    _line("a1", "realiad", [_obj(B10)], _resp([_obj(B10)])),  # pred 1, label 1
    _line("a2", "realiad", [_obj(B10)], _resp([{"bbox_2d": B10}])),  # no points, no mask: pred 0, label 1
    _line("a3", "realiad", [], _resp([])),  # pred 0, label 0
    _line("a4", "realiad", [], _resp([{"bbox_2d": [True, 0, 9, 9], "point_2d": [1, 1]}])),  # pred 1, label 0
    _line("a5", "realiad", [_obj(B10)], "<think>" + LONG + "</think><answer>" + json.dumps([_obj(B10)]) + "</answer>"),
    # ^ pred 1, label 1
    # omniact: GT element box [100, 0, 200, 100] (u5: [0, 0, 5, 5])
    _line("u1", "omniact", [_obj([100, 0, 200, 100], [150, 50])],
          _resp([{"bbox_2d": [100, 0, 200, 100], "point_2d": [99.6, 50]}])),  # point (100, 50): hit
    _line("u2", "omniact", [_obj([100, 0, 200, 100], [150, 50])], _resp([{"point_2d": [150, 50]}])),  # nothing: miss
    _line("u3", "omniact", [_obj([100, 0, 200, 100], [150, 50])],
          _resp([{"bbox_2d": [0, 0, 300, 300], "point_2d": [150, 50, 1]}])),  # point (150, 50): hit
    _line("u4", "omniact", [_obj([100, 0, 200, 100], [150, 50])], _resp([{"bbox_2d": [100, 0, 201, 100]}])),
    # ^ centre [int(150.5), 50] = [150, 50]: hit
    _line("u5", "omniact", [_obj([0, 0, 5, 5], [2, 2])],
          _resp([{"bbox_2d": [10, 10, 20, 20], "point_2d": [True, True]}])),
    # ^ point (1, 1): hit
    # mathvista: the last \boxed{} of the whole response; verify(parse(pred), parse(gt))
    _line("m1", "mathvista", "3", "<think>t</think>\\boxed{3}"),  # correct
    _line("m2", "mathvista", "3", "<think>t</think><answer>3</answer>"),  # no \boxed: "" -> wrong
    _line("m3", "mathvista", "B", "<think>t</think>\\boxed{B}", choices=["12", "15", "20"]),  # choices[1] = 15: correct
    _line("m4", "mathvista", "7", "<think>" + LONG + "</think>\\boxed{7}"),  # no cut: correct
]
# hand-computed public values (the per-record comments above)
PUBLIC_MIXED = {
    "grefcoco": {
        "gIoU": (1 + 1 + 0 + 1 + 1 + 0.9 + 1 + 0 + 1 + 1 + 0 + 0 + 10_000 / 10_004) / 13,
        "cIoU": (100 + 100 + 0 + 100 + 1600 + 90 + 100 + 0 + 0 + 0 + 0 + 0 + 10_000)
                / (100 + 100 + 200 + 100 + 1600 + 100 + 100 + 100 + 0 + 0 + 0 + 4 + 10_004),
        "BboxAcc": 8 / 13,  # g1 g2 g6 g7 g8 g9 g10 g13
        "N-Acc": 2 / 4,  # g9 g10 of g9..g12
    },
    # labels [1, 1, 0, 0, 1], preds [1, 0, 0, 1, 1]: Acc 3/5; TPR 2/3, FPR 1/2: AUC (1 + 2/3 - 1/2) / 2
    "realiad": {"Acc": 3 / 5, "AUC": 7 / 12},
    "omniact": {"Acc": 4 / 5},  # u1 u3 u4 u5
    "mathvista": {"Acc": 3 / 4},  # m1 m3 m4
}


def test_preset_metrics_equal_the_public_arithmetic_by_hand():
    """Each metric of the mixed set under --protocol visionreasoner = the hand-computed public value."""
    m, _ = S.score_all(MIXED, VR)
    for ds, expected in PUBLIC_MIXED.items():
        for key, value in expected.items():
            assert m[ds][key] == approx(value), (ds, key)


def test_preset_metrics_equal_the_transcribed_public_scripts():
    """The preset = the test-only transcription of the public scripts (`_public_metrics`) on the mixed set."""
    m, _ = S.score_all(MIXED, VR)
    public = _public_metrics(MIXED)
    for ds, values in public.items():
        for key, value in values.items():
            assert m[ds][key] == approx(value), (ds, key)
    assert public == {ds: {k: approx(v) for k, v in vals.items()} for ds, vals in PUBLIC_MIXED.items()}


def test_preset_through_the_cli(tmp_path):
    """`--protocol visionreasoner` names its preset in report.md, metrics.json and stdout; a single
    flag on top makes it `custom`."""
    m, report = _run(tmp_path, MIXED, "--protocol", "visionreasoner")
    assert m["omniact"]["Acc"] == approx(4 / 5) and m["grefcoco"]["N-Acc"] == approx(0.5)
    assert m[E.PROTOCOL_KEY]["options"]["preset"] == "visionreasoner"
    assert "preset `visionreasoner` (answer reader `visionreasoner`" in report and "math `visionreasoner`" in report
    m, report = _run(tmp_path, MIXED, "--protocol", "visionreasoner", "--non-object-rule", "strict")
    assert m[E.PROTOCOL_KEY]["options"]["preset"] == "custom" and "preset `custom`" in report
    m, report = _run(tmp_path, MIXED)
    assert m[E.PROTOCOL_KEY]["options"]["preset"] == "project" and "preset `project`" in report


# --------------------------------------------------------------------------------------------
# Where the public scripts crash or print a meaningless value: what the preset reports instead
# --------------------------------------------------------------------------------------------
def test_preset_undefined_values():
    """calculate_iou_with_bbox_nonobj.py prints cIoU 0 for Σ union = 0 (line 79) and N-Acc 0 without
    non-object samples (line 87); calculate_acc_auc.py crashes on one class (line 75 formats None).
    The preset reports cIoU null + a note, leaves N-Acc out, and AUC null + a note (Acc kept)."""
    m, _ = S.score_all([_line("e", "grefcoco", [], _resp([]))], VR)
    assert m["grefcoco"]["cIoU"] is None and any("Σ union = 0" in n for n in m["grefcoco"]["notes"])
    m, _ = S.score_all([_line("t", "grefcoco", [_obj(B10)], _resp([_obj(B10)]))], VR)
    assert "N-Acc" not in m["grefcoco"]
    m, _ = S.score_all([_line("a", "realiad", [], _resp([]))], VR)
    assert m["realiad"]["Acc"] == 1.0 and m["realiad"]["AUC"] is None and m["realiad"]["notes"]


# --------------------------------------------------------------------------------------------
# Test-only transcription of the public scripts (regex, json.loads, plain lists; stand-in masks:
# the box raster on the 840 frame, ordered and clipped, as the preset's report states)
# --------------------------------------------------------------------------------------------
def _public_extract(output_text: str):
    """visurf_model.py extract_bbox_points_think lines 129-150, x_factor = y_factor = 1.0."""
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", output_text, re.DOTALL)
    bboxes, points = [], []
    if m:
        try:
            data = json.loads(m.group(1))
            bboxes = [[int(it["bbox_2d"][0] * 1.0 + 0.5), int(it["bbox_2d"][1] * 1.0 + 0.5),
                       int(it["bbox_2d"][2] * 1.0 + 0.5), int(it["bbox_2d"][3] * 1.0 + 0.5)] for it in data]
            points = [[int(it["point_2d"][0] * 1.0 + 0.5), int(it["point_2d"][1] * 1.0 + 0.5)] for it in data]
        except Exception:  # noqa: BLE001 — line 149
            pass
    return bboxes, points


def _stand_in_mask(bboxes) -> np.ndarray:
    mask = np.zeros((840, 840), dtype=bool)
    for x1, y1, x2, y2 in bboxes:
        xa, xb = max(0, min(x1, x2)), min(840, max(x1, x2) + 1)
        ya, yb = max(0, min(y1, y2)), min(840, max(y1, y2) + 1)
        if xb > xa and yb > ya:
            mask[ya:yb, xa:xb] = True
    return mask


def _public_masks(bboxes, points) -> np.ndarray:
    """generate_masks lines 214-241 with the stand-in mask per box."""
    if not bboxes or (points and len(points) != len(bboxes)) or not points:
        return np.zeros((840, 840), dtype=bool)
    return _stand_in_mask(bboxes)


def _bbox_iou(b1, b2):
    """evaluation_segmentation.py compute_bbox_iou lines 41-62."""
    inter = max(0, min(b1[2], b2[2]) - max(b1[0], b2[0])) * max(0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
    union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
    return 0 if union == 0 else inter / union


def _public_metrics(records) -> dict:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

    seg, anomaly, gui, math_items = [], [], [], []
    for r in records:
        label = json.loads(r["ground_truth"]) if r["data_source"] != "mathvista" else None
        if r["data_source"] == "grefcoco":  # evaluation_segmentation.py process_batch 157-208
            bboxes, points = _public_extract(r["response"])
            pred, gt = _public_masks(bboxes, points), _stand_in_mask([o["bbox_2d"] for o in label])
            inter, union = int((pred & gt).sum()), int((pred | gt).sum())
            if union == 0:
                inter = 0
            ys, xs = np.where(gt)
            gt_bbox = [] if not gt.any() else [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]  # get_bbox
            bbox_iou = 0.0
            if gt_bbox == []:
                bbox_iou = 1.0 if len(bboxes) == 0 else 0.0
            else:
                if any(_bbox_iou(b, gt_bbox) > 0.5 for b in bboxes):
                    bbox_iou = 1.0
                if bboxes:
                    merged = [min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                              max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
                    if _bbox_iou(merged, gt_bbox) > 0.5:
                        bbox_iou = 1.0
            seg.append({"intersection": inter, "union": union, "bbox_iou": bbox_iou,
                        "non_object": int(gt.sum() == 0 and len(bboxes) == 0), "non_object_GT": int(gt.sum() == 0)})
        elif r["data_source"] == "realiad":  # evaluation_anomaly.py 148-149
            bboxes, points = _public_extract(r["response"])
            anomaly.append((float(_public_masks(bboxes, points).sum() / (840 * 840)), int(len(label) > 0)))
        elif r["data_source"] == "omniact":  # evaluation_gui.py 123-135
            bboxes, points = _public_extract(r["response"])
            if len(points) == 0:
                points = [[int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)] for b in bboxes]
            b_x1, b_y1, b_x2, b_y2 = label[0]["bbox_2d"]
            gui.append(1.0 if any(b_x1 <= p[0] <= b_x2 and b_y1 <= p[1] <= b_y2 for p in points) else 0.0)
        else:  # extract_math_answer (+ mathruler extract_boxed_content), evaluation_math.py 93
            text = r["response"]
            answer = ""
            if re.search(r"\\boxed{(.*?)}", text, re.DOTALL):
                start, depth, answer = text.rfind("\\boxed{") + len("\\boxed{"), 0, "None"
                for i in range(start, len(text)):
                    depth += {"{": 1, "}": -1}.get(text[i], 0)
                    if depth == -1:
                        answer = text[start:i].strip()
                        break
            choices = r.get("choices")
            try:
                prediction = choices[ord(answer.strip().lower()[0]) - ord("a")] if choices is not None else answer
            except Exception:  # noqa: BLE001 — line 98
                prediction = ""
            gt = choices[ord(r["ground_truth"]) - ord("A")] if choices else r["ground_truth"]  # the answer text
            math_items.append((prediction, gt))
    # calculate_iou_with_bbox_nonobj.py
    ious = [1.0 if it["non_object"] == 1 else (it["intersection"] / it["union"] if it["union"] > 0 else 0)
            for it in seg]
    total_u = sum(it["union"] for it in seg)
    out = {"grefcoco": {"gIoU": float(np.mean(ious)),
                        "cIoU": sum(it["intersection"] for it in seg) / total_u if total_u > 0 else 0,
                        "BboxAcc": sum(it["bbox_iou"] for it in seg) / len(seg),
                        "N-Acc": sum(it["non_object"] for it in seg) / sum(it["non_object_GT"] for it in seg)}}
    # calculate_acc_auc.py 42, 46, 65
    from sklearn.metrics import roc_auc_score

    out["realiad"] = {"Acc": sum(int(p > 0) == y for p, y in anomaly) / len(anomaly),
                      "AUC": float(roc_auc_score([y for _, y in anomaly], [float(p) > 0 for p, _ in anomaly]))}
    out["omniact"] = {"Acc": sum(a >= 1 for a in gui) / len(gui)}  # calculate_gui_acc.py 37
    out["mathvista"] = {"Acc": sum(  # calculate_math_acc.py 70, 79-83
        1.0 if verify(parse(f"${p}$", extraction_config=[StringExtractionConfig(), LatexExtractionConfig(),
                                                         ExprExtractionConfig()]), parse(f"${g}$")) else 0.0
        for p, g in math_items) / len(math_items)}
    return out
