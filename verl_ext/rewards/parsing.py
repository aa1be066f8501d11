"""Parse a model response (or a label) once into a typed result.

Every scorer, the evaluation metrics and GT alignment read answers through this module, so the
rules below are the project's single definition of "what did the model answer".

Response handling (bounded work, never an exception for any ``str``):

* The response is cut to ``MAX_RESPONSE_CHARS`` characters before anything else looks at it
  (``ParsedResponse.truncated`` says so). A response that long is pathological (2048 tokens are
  ~8k characters); its tail, answer included, is ignored.
* ``answer``: the content of the **last** ``<answer>…</answer>`` pair (the last closing tag and
  the last opening tag before it), ``None`` when there is none. Found with ``str.rfind``, so it is
  linear in the length.
* ``think_format``: ``THINK_ANSWER_PATTERN`` (DOTALL) full-matches the stripped response. A cheap
  start/end pre-check keeps the regex linear (without it, a 20k-character string of
  ``</think> <answer>`` repeats takes ~0.1 s).

Object answers (grounding, anomaly, lesion, gui) — ``parse_objects``:

* The answer must be a JSON **list** (after ``strip()``); anything else makes the whole answer
  invalid (``reason`` = ``no_answer`` | ``bad_json`` | ``not_a_list``). Deeply nested or
  over-long-integer JSON counts as ``bad_json``.
* At most ``MAX_OBJECTS`` objects are read; the rest are dropped (``n_dropped``).
* Each object is checked part by part, so one broken part does not void the other:

  - an object that is not a dict: both parts invalid (``object_not_dict``);
  - missing key: that part invalid (``bbox_missing`` / ``point_missing``);
  - not a list of exactly 4 (bbox) / 2 (point) numbers: invalid (``*_wrong_type``,
    ``*_wrong_length``). ``bool`` and numeric strings (``"12"``) are wrong types;
  - NaN / ±inf (JSON ``NaN``/``Infinity``, or integers too large for a float): invalid
    (``*_non_finite``);
  - float coordinates: accepted and kept as float (no rounding);
  - coordinates outside the frame (negative or > ``FRAME``): clipped to ``[0, FRAME]``;
  - swapped corners (``x1 > x2`` or ``y1 > y2``): reordered.

  Invalid parts are stored as zeros with their validity flag ``False``; scorers must look at the
  flags. ``reasons`` lists every object-level problem (one entry per broken part), ``reason`` is
  the first answer- or object-level problem (``""`` when everything is valid).

Labels (``parse_label``) use the same normalisation but are strict: a label that is not a JSON
list of objects with a valid ``bbox_2d`` and ``point_2d`` each is a data bug and raises
``ValueError`` naming the problem. Parsed labels are cached (the same label is scored for every
member of a group) and their arrays are read-only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from verl_ext.constants import (
    BBOX_KEY,
    FRAME,
    MAX_OBJECTS,
    MAX_RESPONSE_CHARS,
    POINT_KEY,
    THINK_ANSWER_PATTERN,
)

__all__ = [
    "ANSWER_OPEN",
    "ANSWER_CLOSE",
    "ParsedResponse",
    "ParsedObjects",
    "parse_response",
    "extract_answer",
    "extract_boxed",
    "has_think_format",
    "non_repeat",
    "parse_objects",
    "parse_label",
]

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
_THINK_OPEN = "<think>"
_THINK_ANSWER_RE = re.compile(THINK_ANSWER_PATTERN, re.DOTALL)
_BOXED = "\\boxed{"
_BRACE_RE = re.compile(re.escape(_BOXED) + r"|[{}]")

# invalid-answer reasons (answer level); object-level reasons are f"{part}_{problem}"
NO_ANSWER = "no_answer"
BAD_JSON = "bad_json"
NOT_A_LIST = "not_a_list"
OBJECT_NOT_DICT = "object_not_dict"


# --------------------------------------------------------------------------------------------
# Response text
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """A response read once: the (cut) text, the last answer, the think-format flag."""

    text: str  # the response, cut to MAX_RESPONSE_CHARS
    answer: str | None  # content of the last <answer>…</answer>, None when absent
    think_format: bool  # THINK_ANSWER_PATTERN full-matches the stripped text
    truncated: bool  # the response was longer than MAX_RESPONSE_CHARS


def extract_answer(text: str) -> str | None:
    """Content of the last ``<answer>…</answer>`` pair in ``text`` (not stripped), else None."""
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(ANSWER_OPEN) : end]


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text`` with balanced braces, else None.

    An unbalanced last ``\\boxed{`` (cut-off response) falls back to the previous one. One pass over
    the braces (a stack of open braces), so linear in the length for any string (rescanning from
    every ``\\boxed{`` was quadratic: 2.4 s for 2,857 unclosed repeats).
    """
    stack: list[int] = []  # per open brace: content start of a \boxed{, or -1 for a plain "{"
    best = -1
    best_end = -1
    for m in _BRACE_RE.finditer(text):
        token = m.group()
        if token == "}":
            if stack:
                start = stack.pop()
                if start > best:  # the boxed closed here starts after every earlier closed one
                    best, best_end = start, m.start()
        else:
            stack.append(m.end() if token == _BOXED else -1)
    return None if best < 0 else text[best:best_end]


def has_think_format(text: str) -> bool:
    """True when ``THINK_ANSWER_PATTERN`` (DOTALL) full-matches ``text.strip()``."""
    s = text.strip()
    # a full match must start with <think> and end with </answer>; checking that first keeps
    # the lazy-quantifier regex from backtracking quadratically on strings that cannot match
    if not (s.startswith(_THINK_OPEN) and s.endswith(ANSWER_CLOSE)):
        return False
    return _THINK_ANSWER_RE.fullmatch(s) is not None


def non_repeat(text: str) -> float:
    """1.0 unless a sentence (split on '.', stripped, non-empty) repeats twice or more, else 0.0.

    Seg-Zero / VisionReasoner definition: the second repeated sentence (repeat count reaching 2)
    makes the reward 0, so one repetition is tolerated.
    """
    seen: set[str] = set()
    repeats = 0
    for sentence in text.split("."):
        s = sentence.strip()
        if not s:
            continue
        if s in seen:
            repeats += 1
            if repeats >= 2:
                return 0.0
        else:
            seen.add(s)
    return 1.0


def parse_response(solution_str: str) -> ParsedResponse:
    """Read a response once (see module docstring). Accepts any ``str``; never raises."""
    if not isinstance(solution_str, str):
        solution_str = "" if solution_str is None else str(solution_str)
    truncated = len(solution_str) > MAX_RESPONSE_CHARS
    text = solution_str[:MAX_RESPONSE_CHARS] if truncated else solution_str
    return ParsedResponse(
        text=text,
        answer=extract_answer(text),
        think_format=has_think_format(text),
        truncated=truncated,
    )


# --------------------------------------------------------------------------------------------
# Object answers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParsedObjects:
    """A JSON list of ``{"bbox_2d": [x1,y1,x2,y2], "point_2d": [x,y]}`` objects as arrays.

    ``boxes`` float64 [N,4] (x1<=x2, y1<=y2, clipped to [0, FRAME]), ``points`` float64 [N,2]
    (clipped), ``box_valid`` / ``point_valid`` bool [N]. Invalid parts are zeros. ``N`` counts
    every parsed object (valid or not, at most MAX_OBJECTS). ``valid`` is False when the answer
    itself is unusable (no answer, bad JSON, not a list); then N == 0.
    """

    boxes: np.ndarray
    points: np.ndarray
    box_valid: np.ndarray
    point_valid: np.ndarray
    valid: bool
    reason: str = ""  # first problem found, "" when everything is valid
    reasons: tuple[str, ...] = ()  # every object-level problem
    n_dropped: int = 0  # objects beyond MAX_OBJECTS, ignored

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def is_empty_list(self) -> bool:
        """The answer is a valid, empty list ``[]`` (the non-object answer)."""
        return self.valid and len(self) == 0


def _invalid(reason: str) -> ParsedObjects:
    return ParsedObjects(
        boxes=np.zeros((0, 4)),
        points=np.zeros((0, 2)),
        box_valid=np.zeros(0, dtype=bool),
        point_valid=np.zeros(0, dtype=bool),
        valid=False,
        reason=reason,
    )


def _coords(value: object, n: int) -> tuple[list[float] | None, str]:
    """``value`` as ``n`` finite floats, or (None, problem)."""
    if not isinstance(value, list):
        return None, "wrong_type"
    if len(value) != n:
        return None, "wrong_length"
    out = []
    for v in value:
        # bool is an int subclass: a JSON true/false is not a coordinate
        if type(v) is int:
            try:
                f = float(v)
            except OverflowError:  # |v| > ~1.8e308: as unusable as inf
                return None, "non_finite"
        elif type(v) is float:
            f = v
        else:
            return None, "wrong_type"
        if not math.isfinite(f):
            return None, "non_finite"
        out.append(f)
    return out, ""


def _clip(v: float) -> float:
    return 0.0 if v < 0.0 else (float(FRAME) if v > FRAME else v)


def _objects_from_list(items: list, *, strict: bool, scale: float = 1.0) -> ParsedObjects:
    if scale != 1.0:  # model coordinates -> frame pixels before clipping (verl_ext.coords.frame_scale)
        items = [_scaled(obj, scale) for obj in items[:MAX_OBJECTS]] + items[MAX_OBJECTS:]
    n_dropped = max(0, len(items) - MAX_OBJECTS)
    items = items[:MAX_OBJECTS]
    n = len(items)
    rows = []  # [x1, y1, x2, y2, px, py] per object, zeros where a part is invalid
    flags = []  # [box valid, point valid] per object
    reasons: list[str] = []
    for obj in items:
        box = point = None
        if not isinstance(obj, dict):
            reasons.append(OBJECT_NOT_DICT)
        else:
            if BBOX_KEY in obj:
                box, why = _coords(obj[BBOX_KEY], 4)
                if box is None:
                    reasons.append(f"bbox_{why}")
            else:
                reasons.append("bbox_missing")
            if POINT_KEY in obj:
                point, why = _coords(obj[POINT_KEY], 2)
                if point is None:
                    reasons.append(f"point_{why}")
            else:
                reasons.append("point_missing")
        if box is None:
            x1 = y1 = x2 = y2 = 0.0
        else:
            x1, y1, x2, y2 = _clip(box[0]), _clip(box[1]), _clip(box[2]), _clip(box[3])
            if x1 > x2:
                x1, x2 = x2, x1
            if y1 > y2:
                y1, y2 = y2, y1
        if point is None:
            rows.append([x1, y1, x2, y2, 0.0, 0.0])
        else:
            rows.append([x1, y1, x2, y2, _clip(point[0]), _clip(point[1])])
        flags.append([box is not None, point is not None])
    if strict and reasons:
        raise ValueError(f"invalid label object(s): {', '.join(sorted(set(reasons)))}")
    coords = np.array(rows, dtype=np.float64).reshape(n, 6)
    valid = np.array(flags, dtype=bool).reshape(n, 2)
    return ParsedObjects(
        boxes=coords[:, :4],
        points=coords[:, 4:],
        box_valid=valid[:, 0],
        point_valid=valid[:, 1],
        valid=True,
        reason=reasons[0] if reasons else "",
        reasons=tuple(reasons),
        n_dropped=n_dropped,
    )


def _scaled(obj: object, scale: float) -> object:
    """``obj`` with the numbers of its ``bbox_2d`` / ``point_2d`` lists multiplied by ``scale`` (anything
    else, e.g. a wrong type, is left for ``_coords`` to reject as before)."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for key in (BBOX_KEY, POINT_KEY):
        value = obj.get(key)
        if isinstance(value, list):
            out[key] = [_times(v, scale) for v in value]
    return out


def _times(v: object, scale: float) -> object:
    """``v * scale`` for an int / float coordinate (an int too large for a float stays as it is, for
    ``_coords`` to call non-finite); anything else unchanged."""
    if type(v) is float:
        return v * scale
    if type(v) is int:
        try:
            return float(v) * scale
        except OverflowError:
            return v
    return v


def _loads(text: str) -> tuple[object, str]:
    """json.loads with the failures a model can provoke turned into a reason."""
    try:
        return json.loads(text), ""
    except ValueError:  # JSONDecodeError, and int strings over sys.get_int_max_str_digits()
        return None, BAD_JSON
    except RecursionError:  # "[[[[…" nested deeper than the interpreter's recursion limit
        return None, BAD_JSON


def parse_objects(answer: str | None, scale: float = 1.0) -> ParsedObjects:
    """Parse an ``<answer>`` content (``ParsedResponse.answer``) into ``ParsedObjects``.

    ``scale``: multiplies every coordinate before the frame rules apply (clipping to ``[0, FRAME]``,
    ordering): the model's convention -> frame pixels, ``verl_ext.coords.frame_scale`` (1 for the
    paper's absolute 840-frame pixels, 0.84 for Qwen3-VL's relative 0-1000). Never raises; see the
    module docstring for every rule.
    """
    if answer is None:
        return _invalid(NO_ANSWER)
    data, why = _loads(answer.strip())
    if why:
        return _invalid(why)
    if not isinstance(data, list):
        return _invalid(NOT_A_LIST)
    return _objects_from_list(data, strict=False, scale=scale)


@lru_cache(maxsize=4096)
def _parse_label_str(label: str) -> ParsedObjects:
    try:
        data = json.loads(label)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"label is not valid JSON: {label[:200]!r}") from e
    if not isinstance(data, list):
        raise ValueError(f"label must be a JSON list of objects, got {type(data).__name__}: {label[:200]!r}")
    parsed = _objects_from_list(data, strict=True)
    for arr in (parsed.boxes, parsed.points, parsed.box_valid, parsed.point_valid):
        arr.flags.writeable = False  # shared by every caller through the cache
    return parsed


def parse_label(ground_truth: str | list | dict) -> ParsedObjects:
    """Parse a grounding/anomaly/lesion/gui label (``reward_model.ground_truth``).

    Accepts the JSON string data_prep writes, an already-decoded list (or tuple / numpy array) of
    objects, or one object as a dict (a struct column); numpy values inside are read as numbers.
    Raises ValueError for a malformed label (a data bug, not a model error). ``"[]"`` is the
    non-object label. The GT renderer (``align_gt``) reads labels through this function too.
    """
    if isinstance(ground_truth, str):
        return _parse_label_str(ground_truth)
    if isinstance(ground_truth, dict):
        ground_truth = [ground_truth]
    if isinstance(ground_truth, (list, tuple)) or (
        hasattr(ground_truth, "tolist") and not isinstance(ground_truth, bytes)
    ):
        items = ground_truth.tolist() if hasattr(ground_truth, "tolist") else list(ground_truth)
        return _parse_label_str(json.dumps(items, default=_json_default))
    raise ValueError(f"label must be a JSON string, a list of objects or one object (dict), "
                     f"got {type(ground_truth).__name__}")


def _json_default(o: object) -> object:
    # numpy scalars / arrays coming out of a parquet column
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
