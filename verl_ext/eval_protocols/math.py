"""Math accuracy (MathVista, Geometry3K) under three protocols; ``--math-protocol`` picks one.

* ``mathverify`` (default): the training reward's rule, so evaluation and reward agree —
  ``verl_ext.rewards.math``: the answer is the ``<answer>`` content (its ``\\boxed{}`` if any,
  else the last ``\\boxed{}`` of the response); ``answers_match``: normalised string, option
  letter or option text for multiple choice, then math-verify.
* ``mathvista``: MathVista ``evaluation/calculate_score.py`` — ``normalize_extracted_answer``
  then ``safe_equal``: multiple choice: ``(X)`` -> letter ``X``; an upper-case option letter
  picks its option, anything else the option nearest by edit distance (``get_most_similar``,
  Levenshtein, first minimum); ``integer``: ``str(int(float(x)))``; ``float``:
  ``str(round(float(x), precision))``; ``list``: ``str(x)``; a failed conversion is None
  (wrong). Correct iff the normalised prediction equals the reference answer string (the
  option text for multiple choice). Extraction: MathVista ``evaluation/extract_answer.py``
  asks an LLM to pull the answer out of free text; our responses tag it, so the ``<answer>``
  content (as in ``mathverify``) stands in for that step, ``""`` when there is none (as
  ``extract_answer`` returns for an empty response). ``question_type`` / ``answer_type`` /
  ``precision`` come from the row (``extra_info``, MathVista's ``testmini.json`` fields) or,
  when absent, from the label (``mathvista_meta``). Free-form ``text`` answers, for which
  ``normalize_extracted_answer`` has no branch, compare stripped strings (our choice).
* ``visionreasoner``: VisionReasoner ``evaluation/evaluation_math.py`` ``process_batch`` +
  ``evaluation/calculate_math_acc.py`` ``calculate_metrics``, with the answer extraction of
  ``vision_reasoner/models/visurf_model.py`` ``extract_math_answer``: no ``\\boxed{…}`` in the
  response -> ``""``; else the content of the last ``\\boxed{`` up to its balancing ``}``
  (mathruler ``extract_boxed_content``; ``"None"`` when it never closes). Multiple choice: the
  prediction is ``choices[ord(answer.strip().lower()[0]) - ord("a")]`` (Python indexing, so a
  character just below ``a`` picks from the end), ``""`` when that fails. Correct iff
  ``math_verify.verify(parse("$pred$", [String, Latex, Expr]), parse("$gt$"))`` with the
  reference answer (option text for multiple choice). Meant for responses in the public
  ``\\boxed{}`` format (``--prompt-style visionreasoner``); ``<answer>`` tags are not read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

PROTOCOL_SOURCES = {
    "mathverify": "the training reward's rule (verl_ext/rewards/math.py answers_match: normalised string, "
                  "option letter or text, math-verify), answer from <answer> / \\boxed{}",
    "mathvista": "MathVista evaluation/calculate_score.py normalize_extracted_answer + safe_equal (precision "
                 "rounding, nearest choice by edit distance, exact string equality); the <answer> content "
                 "stands in for extract_answer.py's LLM extraction",
    "visionreasoner": "VisionReasoner evaluation_math.py + calculate_math_acc.py: last \\boxed{} of the response "
                      "(visurf_model.py extract_math_answer), option letter -> option text, "
                      "math_verify verify(parse(pred), parse(gt))",
}

_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?\d*\.(\d+)")
MATH_META_KEYS = ("question_type", "answer_type", "precision")  # MathVista testmini.json fields (MathVistaMeta)


@dataclass(frozen=True)
class MathVistaMeta:
    """The MathVista ``testmini.json`` fields ``normalize_extracted_answer`` needs."""

    question_type: str  # "multi_choice" | "free_form"
    answer_type: str  # "text" | "integer" | "float" | "list"
    precision: int | None  # decimals of a float answer


# --------------------------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------------------------
def tagged_answer(response: str) -> str | None:
    """The training reward's answer (``verl_ext.rewards.math.extract_math_answer``), None when absent."""
    from verl_ext.rewards.math import extract_math_answer
    from verl_ext.rewards.parsing import parse_response

    return extract_math_answer(parse_response(response))


def last_boxed_public(text: str) -> str:
    """VisionReasoner ``extract_math_answer`` + mathruler ``extract_boxed_content`` (module docstring)."""
    first = text.find("\\boxed{")
    if first < 0 or text.find("}", first + len("\\boxed{")) < 0:  # = re.search(r'\\boxed{(.*?)}', text) is None,
        return ""  # in linear time (visurf_model.py line 184)
    start = text.rfind("\\boxed{") + len("\\boxed{")
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if depth == -1:
            return text[start:i].strip()
    return "None"


def extract_answer(response: str, protocol: str) -> str | None:
    """The answer a protocol reads from ``response`` (None: no answer at all)."""
    if protocol == "visionreasoner":
        return last_boxed_public(response)
    if protocol in ("mathverify", "mathvista"):
        return tagged_answer(response)
    raise ValueError(f"unknown math protocol {protocol!r}; known: {', '.join(PROTOCOL_SOURCES)}")


# --------------------------------------------------------------------------------------------
# Reference answer and MathVista metadata
# --------------------------------------------------------------------------------------------
def reference_answer(label: str, choices: Sequence[str] | None) -> str:
    """The public reference answer: the option text when the label is an option letter, else the label."""
    label = str(label).strip()
    if choices and len(label) == 1 and "A" <= label.upper() <= "Z" and ord(label.upper()) - 65 < len(choices):
        return str(choices[ord(label.upper()) - 65])
    return label


def mathvista_meta(label: str, choices: Sequence[str] | None, extra: dict | None = None) -> MathVistaMeta:
    """``question_type`` / ``answer_type`` / ``precision`` from ``extra`` (a row's ``extra_info``) where
    present, else inferred from the label: choices -> multi_choice / text; an integer label ->
    integer; a decimal label -> float with precision = its number of decimals; else text."""
    extra = extra or {}
    qtype = extra.get("question_type") or ("multi_choice" if choices else "free_form")
    atype = extra.get("answer_type")
    precision = extra.get("precision")
    ref = reference_answer(label, choices)
    if atype is None:
        if qtype == "multi_choice":
            atype = "text"
        elif _INT_RE.fullmatch(ref):
            atype = "integer"
        elif _FLOAT_RE.fullmatch(ref):
            atype = "float"
        else:
            atype = "text"
    if precision is None and atype == "float":
        m = _FLOAT_RE.fullmatch(ref)
        precision = len(m.group(1)) if m else None
    if precision is not None and precision == precision:  # NaN from a pandas column means "none"
        precision = int(precision)
    else:
        precision = None
    return MathVistaMeta(str(qtype), str(atype), precision)


# --------------------------------------------------------------------------------------------
# MathVista calculate_score.py
# --------------------------------------------------------------------------------------------
def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute: cost 1), as ``Levenshtein.distance``."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def most_similar_choice(prediction: str, choices: Sequence[str]) -> str:
    """``get_most_similar``: the option with the smallest edit distance (the first on ties)."""
    distances = [edit_distance(prediction, c) for c in choices]
    return choices[distances.index(min(distances))]


def mathvista_normalize(extraction: str | None, choices: Sequence[str] | None, meta: MathVistaMeta) -> str | None:
    """``normalize_extracted_answer`` (``ignore_empty_extractions=False``, the script's default)."""
    x = "" if extraction is None else str(extraction)
    if meta.question_type == "multi_choice":
        x = x.strip()
        letters = _PAREN_LETTER.findall(x)
        if letters:
            x = letters[0].upper()
        options = [str(c) for c in (choices or [])]
        if not options:
            return None
        sequential = [chr(ord("A") + i) for i in range(len(options))]
        return options[sequential.index(x)] if x in sequential else most_similar_choice(x, options)
    try:
        if meta.answer_type == "integer":
            return str(int(float(x)))
        if meta.answer_type == "float":
            return str(round(float(x), int(meta.precision)))
    except (ValueError, TypeError, OverflowError):
        return None
    if meta.answer_type == "list":
        return str(x)
    return x.strip()  # free-form text: no branch in the public script (our choice)


def mathvista_correct(extraction: str | None, label: str, choices: Sequence[str] | None, meta: MathVistaMeta) -> bool:
    """``safe_equal(normalize_extracted_answer(...), answer)``."""
    prediction = mathvista_normalize(extraction, choices, meta)
    return prediction is not None and prediction == reference_answer(label, choices)


# --------------------------------------------------------------------------------------------
# VisionReasoner evaluation_math.py + calculate_math_acc.py
# --------------------------------------------------------------------------------------------
def visionreasoner_prediction(answer: str, choices: Sequence[str] | None) -> str:
    """``process_batch``: option letter -> option text for multiple choice, ``""`` when that fails."""
    if not choices:
        return answer
    try:
        return str(list(choices)[ord(answer.strip().lower()[0]) - ord("a")])
    except IndexError:
        return ""


def visionreasoner_correct(answer: str | None, label: str, choices: Sequence[str] | None) -> bool:
    """``calculate_math_acc.py``: ``verify(parse("$pred$", [String, Latex, Expr]), parse("$gt$"))``."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig, parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None  # signal.alarm: main only
    prediction = visionreasoner_prediction("" if answer is None else answer, choices)
    gt = parse(f"${reference_answer(label, choices)}$", parsing_timeout=timeout)
    pred = parse(f"${prediction}$", parsing_timeout=timeout,
                 extraction_config=[StringExtractionConfig(), LatexExtractionConfig(), ExprExtractionConfig()])
    return bool(verify(pred, gt, timeout_seconds=timeout))


# --------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------
def mathverify_correct(answer: str | None, label: str, choices: Sequence[str] | None = None) -> bool:
    """The training reward's rule (``verl_ext.rewards.math.answers_match``); no answer is wrong."""
    from verl_ext.rewards.math import answers_match

    if answer is None or not str(answer).strip():
        return False
    return answers_match(str(answer).strip(), str(label).strip(), [str(c) for c in choices] if choices else None)


def judge(answer: str | None, label: str, choices: Sequence[str] | None = None, protocol: str = "mathverify",
          extra: dict | None = None) -> bool:
    """Is ``answer`` (as ``extract_answer(response, protocol)`` read it) correct for ``label``?
    ``extra``: the row's MathVista fields (``mathvista`` protocol)."""
    choices = [str(c) for c in choices] if choices else None
    if protocol == "mathverify":
        return mathverify_correct(answer, label, choices)
    if protocol == "mathvista":
        return mathvista_correct(answer, label, choices, mathvista_meta(label, choices, extra))
    if protocol == "visionreasoner":
        return visionreasoner_correct(answer, label, choices)
    raise ValueError(f"unknown math protocol {protocol!r}; known: {', '.join(PROTOCOL_SOURCES)}")


def score(response: str, label: str, choices: Sequence[str] | None = None, protocol: str = "mathverify",
          extra: dict | None = None) -> tuple[bool, str | None]:
    """(correct, the answer the protocol read) for one math response."""
    answer = extract_answer(response, protocol)
    return judge(answer, label, choices, protocol, extra), answer
