"""Parity of the evaluation with the public evaluation code, case by case.

Every expected value below is computed by hand from the public formulas; each test names the
public file and function it follows. Public repositories: JIA-Lab-research/VisionReasoner
(= dvlab-research/VisionReasoner; Seg-Zero's scripts are the same), henghuiding/ReLA,
dvlab-research/LISA, lupantech/MathVista. The last section reproduces issue 14 items 8-12 end
to end through the CLI (item 13: tests/test_evaluate.py::test_generate_several_datasets_sharing_ids).
"""

from __future__ import annotations

import json
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
