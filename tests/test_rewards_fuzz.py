"""Any string in -> finite float out, never an exception, bounded time (docs/METHOD.md §4)."""

import json
import logging
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_ext.rewards import RESULT_KEYS, compute_score
from verl_ext.rewards import math as M

LABELS = {
    "refcocog": json.dumps([{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}]),
    "realiad": "[]",
    "isic2018": json.dumps([{"bbox_2d": [0, 0, 840, 840], "point_2d": [420, 420]}]),
    "omniact": json.dumps([{"bbox_2d": [100, 200, 300, 260], "point_2d": [200, 230]}]),
    "geo3k": r"\frac{1}{2}",
}
OBJ = '{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110]}'
CORPUS = [
    "",
    " ",
    "x" * 1_000_000,  # 1 MB
    "<answer>" * 5000,
    "</answer>" * 5000,
    "<think>" + "</think> <answer>" * 2000 + "x",  # quadratic for the bare regex
    "<think>" + "</think>" * 5000 + "</answer>",
    "<answer>[" + ",".join([OBJ] * 100_000) + "]</answer>",  # 10^5 objects (cut to MAX_RESPONSE_CHARS)
    "<answer>[" + ",".join([OBJ] * 300) + "]</answer>",  # more than MAX_OBJECTS, parses
    "<answer>" + "[" * 50_000 + "]" * 50_000 + "</answer>",  # nested JSON
    '<answer>[{"bbox_2d": [[[[1]]]], "point_2d": {"x": 1}}]</answer>',
    '<answer>[{"bbox_2d": [NaN, 1, 2, 3], "point_2d": [Infinity, -Infinity]}]</answer>',
    '<answer>[{"bbox_2d": [1e400, -1e400, 1e308, 2], "point_2d": [1, 2]}]</answer>',
    '<answer>[{"bbox_2d": [' + "9" * 4000 + ', 1, 2, 3], "point_2d": [1, 2]}]</answer>',
    '<answer>[{"bbox_2d": [' + "9" * 5000 + ', 1, 2, 3], "point_2d": [1, 2]}]</answer>',
    '<answer>[{"bbox_2d": [-5, -5, -1, -1], "point_2d": [-3, -3]}]</answer>',
    '<answer>[{"bbox_2d": [900, 900, 2000, 2000], "point_2d": [1000, 1000]}]</answer>',
    '<answer>[{"bbox_2d": [5, 5, 5, 5], "point_2d": [5, 5]}]</answer>',  # degenerate box
    '<answer>[{"bbox_2d": null, "point_2d": true}, 1, "s", null, []]</answer>',
    '<answer>{"bbox_2d": [1, 2, 3, 4]}</answer>',
    "<answer>\x00\ud800\uffff</answer>",  # NUL, lone surrogate, non-character
    "<think>日本語の説明。</think><answer>[{\"bbox_2d\": [１, 2, 3, 4]}]</answer>",  # full-width digit
    "<think>🙂" * 1000 + "</think><answer>\\boxed{" * 1000,
    "<answer>" + "\\boxed{" * 10_000 + "1" + "}" * 10_000 + "</answer>",
    "<answer>\\frac{1}{0}</answer>",
    "<answer>nan</answer>",
    "<answer>" + "9" * 300 + "</answer>",
    "<answer>" + "1+" * 200 + "1</answer>",
    "<answer>\\sqrt{\\sqrt{\\sqrt{x^{y^{z^{w}}}}}}</answer>",
    "<answer>(C</answer>",
    "a." * 10_000,
]


def check(data_source, response, bound_s):
    t = time.perf_counter()
    r = compute_score(data_source, response, LABELS[data_source], {"choices": ["1", "2"]} if "geo" in data_source else None)
    elapsed = time.perf_counter() - t
    assert set(r) == set(RESULT_KEYS)
    assert isinstance(r["score"], float) and math.isfinite(r["score"])
    for key in RESULT_KEYS[1:-1]:
        assert isinstance(r[key], float) and math.isfinite(r[key])
    assert isinstance(r["invalid_reason"], str)
    assert elapsed < bound_s, f"{data_source}: {elapsed:.2f}s for {response[:60]!r}"


@pytest.mark.parametrize("data_source", ["refcocog", "realiad", "isic2018", "omniact"])
@pytest.mark.parametrize("case", range(len(CORPUS)))
def test_corpus_object_tasks(data_source, case):
    check(data_source, CORPUS[case], bound_s=0.5)


@pytest.mark.parametrize("case", range(len(CORPUS)))
def test_corpus_math(case):
    # math-verify's own timeouts bound a call (MATH_VERIFY_TIMEOUT_S per parse / comparison)
    check("geo3k", CORPUS[case], bound_s=4 * M.MATH_VERIFY_TIMEOUT_S + 1)


TAGS = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", ",", ":", '"bbox_2d"',
                        '"point_2d"', "NaN", "-1e9", "3.5", "840", "\\boxed{", "\n", " ", "."])
FRAGMENTS = st.lists(st.one_of(TAGS, st.text(max_size=8), st.integers(-10**6, 10**6).map(str)), max_size=60).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(FRAGMENTS, st.sampled_from(["refcocog", "realiad", "omniact"]))
def test_fuzz_fragments_object_tasks(response, data_source):
    check(data_source, response, bound_s=0.5)


@SETTINGS
@given(st.text(max_size=300), st.sampled_from(["refcocog", "omniact"]))
def test_fuzz_any_text(response, data_source):
    check(data_source, response, bound_s=0.5)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.sampled_from(["bbox_2d", "point_2d", "x"]), children, max_size=3),
    max_leaves=30,
)


@SETTINGS
@given(JSON_VALUES, st.sampled_from(["refcocog", "realiad", "omniact"]))
def test_fuzz_json_answers(value, data_source):
    check(data_source, f"<think>t</think><answer>{json.dumps(value)}</answer>", bound_s=0.5)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="0123456789+-*/^()\\{}.xabcdefrqst ", max_size=20))
def test_fuzz_math_answers(answer):
    check("geo3k", f"<think>t</think><answer>{answer}</answer>", bound_s=4 * M.MATH_VERIFY_TIMEOUT_S + 1)


def test_math_pool_kills_a_stuck_worker():
    pool = M.MathVerifyPool(num_workers=1)
    try:
        assert pool.equal("1/2", "0.5") is True  # worker started
        pool.backstop_s = 1e-4  # nothing finishes this fast: the worker is killed
        assert pool.equal(r"\sqrt{12}", r"2\sqrt{3}") is None and pool.n_backstop_timeouts == 1
        pool.backstop_s = 30.0
        assert pool.equal("1/2", "0.5") is True  # a fresh worker replaced it
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------
# Linear answer scans: a policy repeating a token cannot stall the reward
# --------------------------------------------------------------------------------------------
def _boxed_reference(text):
    """The definition, by the rescanning algorithm: from the last ``\\boxed{`` backwards, the first one
    whose braces balance; its content."""
    pos = text.rfind("\\boxed{")
    while pos >= 0:
        depth, start = 1, pos + len("\\boxed{")
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
        pos = text.rfind("\\boxed{", 0, pos)
    return None


BRACES = st.lists(st.sampled_from(["\\boxed{", "{", "}", "x", "1", " ", "\\frac", "\\boxed"]), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(BRACES)
def test_extract_boxed_matches_its_definition(text):
    from verl_ext.rewards.parsing import extract_boxed

    assert extract_boxed(text) == _boxed_reference(text)


def test_extract_boxed_hand_cases():
    from verl_ext.rewards.parsing import extract_boxed

    assert extract_boxed("\\boxed{a}\\boxed{b") == "a"  # the unclosed last one falls back
    assert extract_boxed("\\boxed{a \\boxed{b}}") == "b"  # the last one that closes, nested
    assert extract_boxed("\\boxed{a}}{\\boxed{b}") == "b"  # a stray "}" does not matter
    assert extract_boxed("}}\\boxed{{x}}") == "{x}"
    assert extract_boxed("\\boxed{" * 5) is None


ADVERSARIAL = {  # token repeats a policy can emit up to the response length (MAX_RESPONSE_CHARS)
    "boxed": "\\boxed{",
    "boxed_brace": "\\boxed{{",
    "answer_boxed": "<answer>\\boxed{",
    "brace": "{",
    "think_answer": "</think> <answer>",
    "answer_close": "</answer>\\boxed{",
}


def _time(fn, *args):
    best = math.inf
    for _ in range(3):  # the best of three: a shared CPU only ever adds time
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("data_source", ["geo3k", "mathvista", "refcocog", "omniact", "realiad"])
@pytest.mark.parametrize("token", list(ADVERSARIAL))
def test_every_reward_scales_linearly_on_repeated_tokens(data_source, token):
    from verl_ext.constants import MAX_RESPONSE_CHARS

    label = LABELS.get(data_source, "3")
    tok = ADVERSARIAL[token]
    full = tok * (MAX_RESPONSE_CHARS // len(tok))
    quarter = full[: len(full) // 4]
    t_full = _time(compute_score, data_source, full, label, {})
    t_quarter = _time(compute_score, data_source, quarter, label, {})
    # linear: x4 for 4x the length; quadratic (the old scan): x16. Generous for a noisy shared CPU,
    # with a floor so that timer noise on ~1 ms calls cannot fail it
    assert t_full < max(8 * t_quarter, 0.05), f"{token}: {t_quarter:.4f}s -> {t_full:.4f}s for 4x the length"
    assert t_full < 1.0, f"{token}: {t_full:.2f}s for {len(full)} characters"


@pytest.mark.parametrize("protocol", ["mathverify", "mathvista", "visionreasoner"])
def test_evaluation_math_reader_scales_linearly(protocol):
    from verl_ext.constants import MAX_RESPONSE_CHARS
    from verl_ext.eval_protocols.math import extract_answer

    full = "\\boxed{" * (MAX_RESPONSE_CHARS // 7)
    t_full = _time(extract_answer, full, protocol)
    t_quarter = _time(extract_answer, full[: len(full) // 4], protocol)
    assert t_full < max(8 * t_quarter, 0.05) and t_full < 1.0, f"{t_quarter:.4f}s -> {t_full:.4f}s"


# --------------------------------------------------------------------------------------------
# The math-verify pool: latency bounded whatever the queue
# --------------------------------------------------------------------------------------------
HARD = r"(10^{7})!"  # math-verify parses it until its timeout


def test_math_pool_latency_is_bounded_whatever_the_queue():
    import threading

    pool = M.MathVerifyPool(num_workers=1, timeout_s=1)
    pool.backstop_s = 2.0  # every request, the wait for the worker included
    try:
        assert pool.equal("1/2", "0.5") is True  # worker started (start-up is not what is measured)
        lat, res = [None] * 4, [None] * 4

        def one(k):
            t = time.perf_counter()
            res[k] = pool.equal("2", HARD)
            lat[k] = time.perf_counter() - t

        threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # serialised behind one worker the last request waited for the three before it (>= 3 x 1 s)
        assert max(lat) < pool.backstop_s + 1.0, [round(x, 2) for x in lat]
        assert all(r in (False, None) for r in res)  # never scored as equal
        assert pool.n_shed + pool.n_backstop_timeouts >= 1  # someone was shed or cut off, not queued
        pool.backstop_s = 30.0
        assert pool.equal("1/2", "0.5") is True  # the pool still works afterwards
    finally:
        pool.close()


def test_math_pool_size(monkeypatch):
    monkeypatch.setenv(M.WORKERS_ENV, "3")
    assert M.MathVerifyPool().num_workers == 3
    monkeypatch.delenv(M.WORKERS_ENV)
    assert 2 <= M.MathVerifyPool().num_workers <= 4
    monkeypatch.setenv(M.WORKERS_ENV, "zero")
    with pytest.raises(ValueError, match=M.WORKERS_ENV):
        M.MathVerifyPool()


def test_math_verify_timeout_log_is_short(caplog):
    """math-verify logs the input it timed out on; a 20k-character response gives a short line."""
    from verl_ext.rewards._math_worker import LOG_MESSAGE_CHARS

    logging.getLogger("math_verify.parser").warning("Timeout during parsing: %s", "x" * 20_000)
    (record,) = [r for r in caplog.records if r.name == "math_verify.parser"]
    assert record.getMessage() == "Timeout during parsing: " + "x" * (LOG_MESSAGE_CHARS - 24) + "... [19824 more characters]"
