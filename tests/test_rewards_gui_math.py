"""GUI and math rewards: hand-computed scores, multiple choice, GT rows, thread safety."""

import json
import threading

import pytest

from verl_ext.rewards import compute_score
from verl_ext.rewards import gui
from verl_ext.rewards import math as M
from verl_ext.rewards.parsing import parse_response

ELEMENT = json.dumps([{"bbox_2d": [100, 200, 300, 260], "point_2d": [200, 230]}])


def click(x, y, think="find the button."):
    return f'<think>{think}</think><answer>[{{"point_2d": [{x}, {y}]}}]</answer>'


# ------------------------------------------------------------------------------------------ gui
@pytest.mark.parametrize("x, y, acc", [(200, 230, 1.0), (100, 200, 1.0), (300, 260, 1.0), (99, 230, 0.0), (200, 261, 0.0)])
def test_gui_point_in_box(x, y, acc):
    r = gui.compute_score(click(x, y), ELEMENT)
    assert r == {"score": 3.0 + acc, "thinking_format": 1.0, "answer_format": 1.0, "accuracy": acc,
                 "non_repeat": 1.0, "invalid_reason": ""}


def test_gui_format_rules():
    two = '<think>a</think><answer>[{"point_2d": [200, 230]}, {"point_2d": [0, 0]}]</answer>'
    r = gui.compute_score(two, ELEMENT)  # only the first point counts, extras cost the format
    assert r["accuracy"] == 1.0 and r["answer_format"] == 0.0 and r["invalid_reason"] == "extra_objects"
    r = gui.compute_score("<think>a</think><answer>[]</answer>", ELEMENT)
    assert r["score"] == 2.0 and r["invalid_reason"] == "no_point"
    r = gui.compute_score('<think>a</think><answer>[{"point_2d": [1]}]</answer>', ELEMENT)
    assert r["score"] == 2.0 and r["invalid_reason"] == "point_wrong_length"
    r = gui.compute_score('<think>a</think><answer>[{"point_2d": [200.5, 230.5]}]</answer>', ELEMENT)
    assert r["accuracy"] == 1.0  # float coordinates


def test_gui_gt_row_and_dispatch():
    gt = '<answer>[{"point_2d": [200, 230]}]</answer>'
    assert compute_score("omniact", gt, ELEMENT, {"is_gt": True})["score"] == 3.0
    assert compute_score("omniact", click(200, 230), ELEMENT, {"is_gt": True}, gt_thinking_reward="full")["score"] == 4.0
    assert compute_score("omniact", click(200, 230), ELEMENT, {"is_gt": True})["score"] == 3.0
    with pytest.raises(ValueError):
        gui.compute_score(click(1, 1), "[]")


# ----------------------------------------------------------------------------------------- math
def ans(a, think="compute it."):
    return f"<think>{think}</think><answer>{a}</answer>"


@pytest.mark.parametrize(
    "response, gold, acc",
    [
        (ans("3"), "3", 1.0),
        (ans("3.0"), "3", 1.0),
        (ans(r"\frac{1}{2}"), "0.5", 1.0),
        (ans("1/2"), r"\frac{1}{2}", 1.0),
        (ans(r"2\sqrt{3}"), r"\sqrt{12}", 1.0),
        (ans(r"$\boxed{7}$"), "7", 1.0),  # \boxed inside <answer>
        (r"<think>so</think> the answer is \boxed{7}", "7", 1.0),  # \boxed without answer tags
        (ans("4"), "3", 0.0),
    ],
)
def test_math_accuracy(response, gold, acc):
    r = M.compute_score(response, gold)
    assert r["accuracy"] == acc
    assert r["score"] == r["thinking_format"] + acc


def test_math_components():
    assert M.compute_score(ans("3"), "3") == {"score": 2.0, "thinking_format": 1.0, "answer_format": 1.0,
                                               "accuracy": 1.0, "non_repeat": 1.0, "invalid_reason": ""}
    r = M.compute_score("the answer is 3", "3")
    assert r == {"score": 0.0, "thinking_format": 0.0, "answer_format": 0.0, "accuracy": 0.0,
                 "non_repeat": 1.0, "invalid_reason": "no_answer"}
    r = M.compute_score(ans("3", think="a. a. a. a."), "3")  # non_repeat is logged, weight 0
    assert r["non_repeat"] == 0.0 and r["score"] == 2.0


CHOICES = ["12", "15", r"\frac{1}{2}", "no solution"]


@pytest.mark.parametrize(
    "answer, acc",
    [("C", 1.0), ("(C)", 1.0), ("C.", 1.0), (r"C) \frac{1}{2}", 1.0), ("c", 1.0), ("B", 0.0), ("(A) 12", 0.0),
     (r"\frac{1}{2}", 1.0), ("0.5", 1.0), ("12", 0.0), ("No solution", 0.0)],
)
def test_multiple_choice_letter_or_text(answer, acc):
    assert compute_score("mathvista", ans(answer), "C", {"choices": CHOICES})["accuracy"] == acc


def test_multiple_choice_label_given_as_text():
    extra = {"choices": CHOICES}
    assert compute_score("mathvista", ans("D"), "no solution", extra)["accuracy"] == 1.0
    assert compute_score("mathvista", ans("No Solution"), "no solution", extra)["accuracy"] == 1.0
    assert compute_score("mathvista", ans("A"), "no solution", extra)["accuracy"] == 0.0


def test_math_gt_row():
    gt = "<answer>3</answer>"
    assert compute_score("geo3k", gt, "3", {"is_gt": True})["score"] == 1.0
    assert compute_score("geo3k", ans("3"), "3", {"is_gt": True})["score"] == 1.0
    assert compute_score("geo3k", ans("3"), "3", {"is_gt": True, "gt_thinking_reward": "full"})["score"] == 2.0


def test_extract_math_answer():
    assert M.extract_math_answer(parse_response(r"<answer>so \boxed{4}</answer>")) == "4"
    assert M.extract_math_answer(parse_response(r"\boxed{1} \boxed{2}")) == "2"
    assert M.extract_math_answer(parse_response("nothing")) is None


def test_math_outside_the_main_thread_uses_the_pool():
    # verl scores in executor threads, where math-verify's signal timeouts cannot work
    out = {}

    def run():
        out["hard"] = compute_score("geo3k", ans(r"2\sqrt{3}"), r"\sqrt{12}")
        out["batch"] = M.compute_score_batch([ans("0.5"), ans("x")], ["1/2", "2"])

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    M.MathVerifyPool.shared().close()
    assert out["hard"]["accuracy"] == 1.0 and out["hard"]["invalid_reason"] == ""
    assert [r["accuracy"] for r in out["batch"]] == [1.0, 0.0]


def test_math_pool_matches_in_process():
    sols = [ans(a) for a in ["3", "0.5", r"\frac{2}{4}", "7", "x+1", "(1, 2)"]]
    golds = ["3", r"\frac{1}{2}", "0.5", "8", "1+x", "(1,2)"]
    pool = M.MathVerifyPool(num_workers=2)
    try:
        pooled = M.compute_score_batch(sols, golds, pool=pool)
    finally:
        pool.close()
    assert pooled == M.compute_score_batch(sols, golds)
    assert [r["accuracy"] for r in pooled] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("label", [None, float("nan"), "", "  "])
def test_a_missing_math_label_is_an_error_not_a_match(label):
    """None / NaN would read as "null" / "nan" and match those answers (full reward 2.0)."""
    for response in ("<think>x</think><answer>null</answer>", "<think>x</think><answer>nan</answer>", ""):
        with pytest.raises(ValueError, match="no label"):
            M.compute_score(response, label)
        with pytest.raises(ValueError, match="no label"):
            M.compute_score_batch([response], [label])


def test_is_gt_from_extra_info_is_read_as_a_flag_not_with_bool():
    from verl_ext.rewards import as_flag

    response = '<answer>[{"point_2d": [200, 230]}]</answer>'  # no think block: the GT's thinking reward differs
    plain = compute_score("omniact", response, ELEMENT, {})
    gt = compute_score("omniact", response, ELEMENT, {"is_gt": True, "gt_thinking_reward": "full"})
    assert plain["thinking_format"] == 0.0 and gt["thinking_format"] == 1.0
    for value, same_as in (("false", plain), ("False", plain), ("0", plain), (0, plain), (False, plain),
                           (None, plain), ("true", gt), ("TRUE", gt), ("1", gt), (1, gt)):
        assert compute_score("omniact", response, ELEMENT, {"is_gt": value, "gt_thinking_reward": "full"}) == same_as
    for bad in ("no", "yes", 2, 0.5, [True]):
        with pytest.raises(ValueError, match="is_gt must be true or false"):
            as_flag(bad, "is_gt")
