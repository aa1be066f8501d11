"""What a valid label is: one definition shared by the task scorers and the GT renderer.

``reward_model.ground_truth`` reaches the project in whatever form the data loader produced:
the JSON string data_prep writes, a list of dicts (HF ``datasets`` for a list-of-struct column),
a numpy array of dicts with numpy arrays inside (pandas / pyarrow), one dict (a struct column),
or a number / string (verl's own text datasets). Every reader goes through this module, so a
label the scorer accepts is a label the GT renderer accepts, and a label one rejects the other
rejects with the same ``ValueError`` text:

* object tasks (grounding, anomaly, lesion, gui): ``parse_task_label`` = ``parsing.parse_label``
  (coordinates clipped to ``[0, FRAME]``, swapped corners reordered, a box and a point on every
  object; a dict is one object) plus gui's one-element rule. The scorer scores, and
  ``align_gt`` renders, the same ``ParsedObjects``.
* answer labels (math, and every ``data_source`` outside the project's table): ``answer_label``.
* ``is_missing``: no label at all (the row gets no GT member, counted as ``no_label``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from verl_ext.rewards.parsing import ParsedObjects, parse_label

__all__ = ["OBJECT_TASKS", "answer_label", "is_missing", "label_key", "parse_task_label", "plain"]

OBJECT_TASKS = ("grounding", "anomaly", "lesion", "gui")  # labels: a list of {bbox_2d, point_2d} objects


def plain(value: Any) -> Any:
    """``value`` with numpy arrays / scalars turned into Python lists / scalars, recursively
    through lists, tuples and dicts (what ``json.dumps`` and ``==`` need)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def is_missing(ground_truth: Any) -> bool:
    """No label: ``None``, NaN (pandas' missing value) or a blank string. ``"[]"`` / ``[]`` is a
    label (the non-object answer), not a missing one."""
    if ground_truth is None:
        return True
    if isinstance(ground_truth, (float, np.floating)):
        return math.isnan(float(ground_truth))
    return isinstance(ground_truth, str) and not ground_truth.strip()


def label_key(ground_truth: Any) -> tuple[str, str]:
    """A hashable identity of a label in any form (the G+1 copies of a prompt share it):
    ``("str", text)`` for a string, ``("json", canonical JSON)`` for anything else."""
    if isinstance(ground_truth, str):
        return ("str", ground_truth)
    return ("json", json.dumps(plain(ground_truth), sort_keys=True, default=repr))


def answer_label(ground_truth: Any) -> str:
    """The label as answer text: a string stripped, a number as ``str`` (numpy scalars as the
    Python value), any other JSON-serialisable value (list, dict, numpy array) as ``json.dumps``.

    Raises ValueError for a missing label (``is_missing``: None, NaN, blank — it would otherwise
    read as ``"null"`` / ``"nan"`` and match an answer of that text) and for a value that is none of
    these.
    """
    if is_missing(ground_truth):
        raise ValueError(f"no label ({ground_truth!r}): every row needs its answer in reward_model.ground_truth")
    value = plain(ground_truth)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        raise ValueError(f"label of type {type(ground_truth).__name__} is not a string, number or "
                         "JSON-serialisable value") from None


def parse_task_label(ground_truth: Any, task: str) -> ParsedObjects:
    """The label of an object task as the scorer reads it (``parsing.parse_label``), with the
    gui rule: exactly one element. ValueError names the problem."""
    if task not in OBJECT_TASKS:
        raise ValueError(f"{task!r} is not an object task; object tasks: {', '.join(OBJECT_TASKS)}")
    parsed = parse_label(ground_truth)
    if task == "gui" and len(parsed) != 1:
        raise ValueError(f"a gui label has exactly one element, got {len(parsed)}")
    return parsed
