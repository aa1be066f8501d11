"""Grounding / anomaly / lesion reward and the shared parser: hand-computed scores."""

import json

import numpy as np
import pytest

from verl_ext.constants import FRAME, MAX_OBJECTS, MAX_RESPONSE_CHARS
from verl_ext.rewards import compute_score
from verl_ext.rewards import grounding as G
from verl_ext.rewards.parsing import (
    extract_answer,
    extract_boxed,
    has_think_format,
    non_repeat,
    parse_label,
    parse_objects,
    parse_response,
)

A = {"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}
B = {"bbox_2d": [225, 296, 706, 786], "point_2d": [302, 410]}


def resp(objs, think="I look at the image."):
    answer = objs if isinstance(objs, str) else json.dumps(objs)
    return f"<think>{think}</think><answer>{answer}</answer>"


def score(objs, label, **kw):
    return G.compute_score(resp(objs), json.dumps(label), **kw)


# -------------------------------------------------------------------------------------- parser
def test_extract_answer_takes_the_last_pair():
    assert extract_answer("<answer>1</answer> x <answer>2</answer>") == "2"
    assert extract_answer("<answer>1</answer><answer>2") == "1"
    assert extract_answer("no tags") is None
    assert extract_answer("</answer><answer>") is None


def test_extract_boxed_balanced_and_last():
    assert extract_boxed(r"\boxed{1} and \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{3} then \boxed{unclosed") == "3"
    assert extract_boxed("none") is None


@pytest.mark.parametrize(
    "text, ok",
    [
        ("<think>a</think><answer>b</answer>", True),
        ("  <think>a</think>\n <answer>b</answer>\n", True),  # stripped, \s* between
        ("<think>a</think>x<answer>b</answer>", False),
        ("<answer>b</answer>", False),
        ("<think>a</think><answer>b</answer>tail", False),
        ("<think>a\nb</think><answer>[\n]</answer>", True),  # DOTALL
    ],
)
def test_think_format(text, ok):
    assert has_think_format(text) is ok


def test_response_is_cut():
    r = parse_response("<answer>[]</answer>" + "x" * MAX_RESPONSE_CHARS)
    assert r.truncated and len(r.text) == MAX_RESPONSE_CHARS and r.answer == "[]"
    r = parse_response("x" * MAX_RESPONSE_CHARS + "<answer>[]</answer>")
    assert r.truncated and r.answer is None  # the tail beyond the cap is not read


def test_non_repeat_tolerates_one_repetition():
    assert non_repeat("a. b. a. c.") == 1.0
    assert non_repeat("a. b. a. a.") == 0.0
    assert non_repeat("a. b. a. b.") == 0.0
    assert non_repeat("") == 1.0


def test_parse_objects_normalises_coordinates():
    p = parse_objects(json.dumps([
        {"bbox_2d": [200, 210, 10, 100], "point_2d": [30.5, 110.25]},  # swapped corners, floats
        {"bbox_2d": [-5, -1, 900, 1000], "point_2d": [-3, 2000]},  # outside the frame
    ]))
    assert p.valid and p.reason == "" and len(p) == 2
    np.testing.assert_array_equal(p.boxes, [[10, 100, 200, 210], [0, 0, FRAME, FRAME]])
    np.testing.assert_array_equal(p.points, [[30.5, 110.25], [0, FRAME]])
    assert p.box_valid.all() and p.point_valid.all()


@pytest.mark.parametrize(
    "obj, reason, box_ok, point_ok",
    [
        ({"bbox_2d": [1, 2, 3], "point_2d": [1, 2]}, "bbox_wrong_length", False, True),
        ({"bbox_2d": [1, 2, 3, "4"], "point_2d": [1, 2]}, "bbox_wrong_type", False, True),
        ({"bbox_2d": [1, 2, 3, True], "point_2d": [1, 2]}, "bbox_wrong_type", False, True),
        ({"bbox_2d": "1,2,3,4", "point_2d": [1, 2]}, "bbox_wrong_type", False, True),
        ({"bbox_2d": [1, 2, 3, 4], "point_2d": [float("nan"), 2]}, "point_non_finite", True, False),
        ({"bbox_2d": [1, 2, 3, 10**400], "point_2d": [1, 2]}, "bbox_non_finite", False, True),
        ({"point_2d": [1, 2]}, "bbox_missing", False, True),
        ([1, 2, 3, 4], "object_not_dict", False, False),
    ],
)
def test_parse_objects_invalid_parts(obj, reason, box_ok, point_ok):
    p = parse_objects(json.dumps([obj]))
    assert p.valid and p.reason == reason
    assert bool(p.box_valid[0]) is box_ok and bool(p.point_valid[0]) is point_ok


@pytest.mark.parametrize(
    "answer, reason",
    [(None, "no_answer"), ("", "bad_json"), ("[{", "bad_json"), ('{"bbox_2d": [1,2,3,4]}', "not_a_list"),
     ("[" * 100000 + "]" * 100000, "bad_json"), ("1" * 5000, "bad_json")],
)
def test_parse_objects_invalid_answers(answer, reason):
    p = parse_objects(answer)
    assert not p.valid and p.reason == reason and len(p) == 0


def test_parse_objects_caps_objects():
    p = parse_objects(json.dumps([A] * (MAX_OBJECTS + 5)))
    assert len(p) == MAX_OBJECTS and p.n_dropped == 5


def test_parse_label_strict_and_cached():
    lab = parse_label(json.dumps([A]))
    assert lab is parse_label(json.dumps([A])) and not lab.boxes.flags.writeable
    assert len(parse_label("[]")) == 0
    assert len(parse_label([A, B])) == 2  # an already-decoded list
    for bad in ("not json", '{"a": 1}', json.dumps([{"bbox_2d": [1, 2, 3]}]), json.dumps([{"bbox_2d": [1, 2, 3, 4]}])):
        with pytest.raises(ValueError):
            parse_label(bad)


# ------------------------------------------------------------------------------------- geometry
def test_iou_inclusive_pixels():
    a = np.array([[0.0, 0, 9, 9]])
    b = np.array([[5.0, 0, 14, 9], [0.0, 0, 9, 9], [20.0, 20, 30, 30]])
    # 10x10 boxes overlapping 5x10: 50 / (100 + 100 - 50)
    np.testing.assert_allclose(G.box_iou_matrix(a, b), [[50 / 150, 1.0, 0.0]])
    np.testing.assert_allclose(G.box_l1_matrix(a, b), [[(5 + 5) / 4, 0.0, (20 + 20 + 21 + 21) / 4]])
    np.testing.assert_allclose(G.point_dist_matrix(np.array([[0.0, 0]]), np.array([[3.0, 4]])), [[5.0]])


# --------------------------------------------------------------------------------------- scores
def test_perfect_two_objects():
    r = score([B, A], [A, B])  # order does not matter (Hungarian)
    assert r == {"score": 7.0, "thinking_format": 1.0, "answer_format": 2.0, "accuracy": 3.0,
                 "non_repeat": 1.0, "invalid_reason": ""}


def test_partial_terms_hand_computed():
    # box shifted by 12 px in x: IoU = (191-12)*111 / (2*191*111 - 179*111) = 179/203 > 0.5,
    # mean L1 = (12+0+12+0)/4 = 6 < 10; point 40 px away -> no point term: pair reward 2
    shifted = {"bbox_2d": [22, 100, 212, 210], "point_2d": [70, 110]}
    r = score([shifted], [A])
    assert r["accuracy"] == 2.0 and r["answer_format"] == 2.0 and r["score"] == 6.0
    # mean L1 = 12 -> only IoU (IoU = 167/215 > .5); point 20 px away and inside its box -> +1
    shifted = {"bbox_2d": [34, 100, 224, 210], "point_2d": [50, 110]}
    assert score([shifted], [A])["accuracy"] == 2.0
    # the point is close to the GT point but outside its own predicted box -> no point term
    outside = {"bbox_2d": [10, 100, 200, 210], "point_2d": [5, 110]}
    assert score([outside], [A])["accuracy"] == 2.0


def test_extra_and_missing_objects_divide_by_max():
    assert score([A, B, {"bbox_2d": [0, 0, 5, 5], "point_2d": [1, 1]}], [A, B])["accuracy"] == 2.0  # 6/3
    assert score([A], [A, B])["accuracy"] == 1.5  # 3/2
    # an object with a broken box still counts in M: (3 + 0) / 2, answer format (2 + 1) / 2
    r = score([A, {"bbox_2d": [1, 2], "point_2d": [1, 1]}], [A])
    assert r["accuracy"] == 1.5 and r["answer_format"] == 1.5 and r["invalid_reason"] == "bbox_wrong_length"


def test_hungarian_beats_greedy():
    # pred P0 matches both labels partly, P1 only label 0: greedy P0->L0 would lose L1
    l0 = {"bbox_2d": [0, 0, 99, 99], "point_2d": [50, 50]}
    l1 = {"bbox_2d": [0, 0, 99, 109], "point_2d": [50, 200]}
    p0 = {"bbox_2d": [0, 0, 99, 99], "point_2d": [50, 50]}  # vs l0: 3; vs l1: IoU .91, L1 2.5 -> 2
    p1 = {"bbox_2d": [0, 0, 99, 101], "point_2d": [50, 60]}  # vs l0: 3 ; vs l1: 2
    r = score([p0, p1], [l0, l1])
    assert r["accuracy"] == pytest.approx(5 / 2)


def test_non_object_rule():
    assert score([], []) == {"score": 7.0, "thinking_format": 1.0, "answer_format": 2.0, "accuracy": 3.0,
                             "non_repeat": 1.0, "invalid_reason": ""}
    r = score([A], [])  # any box against [] -> accuracy 0, format as usual
    assert r["accuracy"] == 0.0 and r["answer_format"] == 2.0 and r["score"] == 4.0
    r = score([], [A])  # [] against objects -> nothing
    assert r["accuracy"] == 0.0 and r["answer_format"] == 0.0 and r["score"] == 2.0
    r = G.compute_score("<think>x</think><answer></answer>", "[]")  # empty string is not []
    assert r["accuracy"] == 0.0 and r["invalid_reason"] == "bad_json"


def test_format_failures():
    r = G.compute_score(f"<answer>{json.dumps([A])}</answer>", json.dumps([A]))
    assert r["thinking_format"] == 0.0 and r["score"] == 6.0
    r = G.compute_score("<think>a</think> no answer", json.dumps([A]))
    assert r["score"] == 1.0 and r["invalid_reason"] == "no_answer"  # only non_repeat
    r = G.compute_score(resp([A], think="a. same. same. same."), json.dumps([A]))
    assert r["non_repeat"] == 0.0 and r["score"] == 6.0


def test_gt_thinking_reward():
    label = json.dumps([A])
    assert score([A], [A], is_gt=True)["thinking_format"] == 0.0
    assert score([A], [A], is_gt=True)["score"] == 6.0
    assert score([A], [A], is_gt=True, gt_thinking_reward="full")["score"] == 7.0
    assert score([A], [A], is_gt=False)["score"] == 7.0
    # the aligned GT has no <think>: 0 either way
    assert G.compute_score(f"<answer>{json.dumps([A])}</answer>", label, is_gt=True)["score"] == 6.0
    with pytest.raises(ValueError):
        score([A], [A], is_gt=True, gt_thinking_reward="half")


@pytest.mark.parametrize("source", ["refcocog", "reasonseg", "realiad", "isic2018", "visurf_mix"])
def test_dispatcher_routes_object_tasks(source):
    assert compute_score(source, resp([A]), json.dumps([A]))["score"] == 7.0
    assert compute_score(source, resp([A]), json.dumps([A]), {"is_gt": True})["score"] == 6.0
    assert compute_score(source, resp([A]), json.dumps([A]), None, is_gt=True, gt_thinking_reward="full")["score"] == 7.0


def test_anomaly_normal_sample():
    assert compute_score("realiad", resp([]), "[]")["score"] == 7.0
    assert compute_score("realiad", resp([A]), "[]")["accuracy"] == 0.0


def test_dispatcher_unknown_source():
    with pytest.raises(ValueError, match="unknown data_source 'coco'.*refcocog"):
        compute_score("coco", "", "[]")


def test_batch_equals_single():
    rng = np.random.default_rng(0)
    sols, labels = [], []
    for k in range(200):
        gt = [{"bbox_2d": sorted(rng.integers(0, 800, 2).tolist()) * 1, "point_2d": [0, 0]} for _ in range(rng.integers(0, 4))]
        gt = [{"bbox_2d": [b["bbox_2d"][0], 10, b["bbox_2d"][1], 300], "point_2d": [b["bbox_2d"][0], 20]} for b in gt]
        pred = [{"bbox_2d": [o["bbox_2d"][0] + int(rng.integers(-20, 20)), 10, o["bbox_2d"][2], 300 + int(rng.integers(-20, 20))],
                 "point_2d": [o["point_2d"][0] + int(rng.integers(-40, 40)), 20]} for o in gt]
        if k % 5 == 0:
            pred = pred + [A]
        sols.append(resp(pred) if k % 7 else "<answer>[{broken")
        labels.append(json.dumps(gt))
    flags = [k % 3 == 0 for k in range(200)]
    batch = G.compute_score_batch(sols, labels, is_gt=flags)
    single = [G.compute_score(s, l, is_gt=f) for s, l, f in zip(sols, labels, flags)]
    assert batch == single
