"""OmniACT (GUI grounding) -> verl parquet (data_source ``omniact``).

Reads the split file ``ROOT/<split>.json`` (a dict keyed by string index: ``{"task", "image",
"box"}`` paths relative to ``ROOT``), the task ``.txt`` (``Task: ...`` + a PyAutoGUI script),
the screenshot and the element boxes JSON (``{key: {label, top_left, bottom_right}}``). The
target is the smallest element box containing the first click-like action's coordinates; the
label is ``[{"bbox_2d": element box, "point_2d": element centre}]`` in the 840 frame. Web
samples whose files are stored as ``screenN.png`` / ``screenN_boxes.json`` are found too.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    check_inside,
    frame_image_bytes,
    image_size,
    labels_json,
    make_object,
    make_parser,
    open_image,
    read_json,
    run_cli,
)

ACTION = re.compile(
    r"pyautogui\.(click|rightClick|doubleClick|tripleClick|middleClick|moveTo|dragTo)\(\s*"
    r"(-?\d+(?:\.\d*)?)\s*,\s*(-?\d+(?:\.\d*)?)"
)


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str


def web_variants(path: str) -> list[str]:
    """The split file's path, then the on-disk web spelling (screen_1.png -> screen1.png,
    screen_1.json -> screen1_boxes.json)."""
    out = [path]
    base = os.path.basename(path)
    alt = base.replace("screen_", "screen")
    if alt.endswith(".json") and not alt.endswith("_boxes.json"):
        alt = alt[: -len(".json")] + "_boxes.json"
    if alt != base:
        out.append(os.path.join(os.path.dirname(path), alt))
    return out


def find(root: str, rel: str) -> str:
    cands = [os.path.join(root, v) for v in web_variants(rel)]
    for c in cands:
        if os.path.isfile(c):
            return c
    return cands[0]


def parse_task(text: str, path: str) -> tuple[str, tuple[float, float]]:
    """(task sentence, first click-like coordinates) of a task .txt."""
    m = re.search(r"^\s*Task:\s*(.+?)\s*$", text, re.MULTILINE)
    if not m:
        raise RowError("malformed_task", f"{path}: no 'Task:' line")
    act = ACTION.search(text)
    if not act:
        raise RowError("no_click", f"{path}: the script has no click/moveTo/dragTo with coordinates")
    return m.group(1), (float(act.group(2)), float(act.group(3)))


def question_of(task: str) -> str:
    """'Navigate to see X.' -> 'navigate to see X' (fits 'where should I click to ...?')."""
    t = task.strip().rstrip(".?!").strip()
    if len(t) > 1 and t[0].isupper() and not t[1].isupper():
        t = t[0].lower() + t[1:]
    return t


def records(args):
    split_file = os.path.join(args.root, f"{args.split}.json")
    entries = read_json(split_file)
    if isinstance(entries, list):
        items = list(enumerate(entries))
    elif isinstance(entries, dict):
        try:
            items = sorted(entries.items(), key=lambda kv: int(kv[0]))
        except ValueError:
            items = sorted(entries.items())
    else:
        raise DataPrepError(f"{split_file}: expected a dict keyed by index (or a list)")
    for key, e in items:
        name = f"{key!s} in {split_file}"
        problem = entry_problem(e)
        if problem:
            yield {"name": name, "error": ("malformed_json", f"entry {name}: {problem}")}
            continue
        yield {"name": name, "id": str(key), "task_path": find(args.root, e["task"]),
               "image_path": find(args.root, e["image"]), "box_path": find(args.root, e["box"])}


def entry_problem(entry) -> str:
    """What is wrong with a split-file entry ("" when nothing): it must be a dict whose ``task``,
    ``image`` and ``box`` are non-empty path strings."""
    if not isinstance(entry, dict):
        return f"not a dict ({repr(entry)[:120]})"
    bad = [k for k in ("task", "image", "box") if not isinstance(entry.get(k), str) or not entry[k].strip()]
    if bad:
        return ", ".join(f"{k} is {entry.get(k)!r}" for k in bad) + " (expected a path relative to the root)"
    return ""


def convert(rec: dict, opts: Opts) -> list[dict]:
    if "error" in rec:
        raise RowError(*rec["error"])
    name = rec["name"]
    if not os.path.isfile(rec["task_path"]):
        raise RowError("missing_file", f"missing task file: {rec['task_path']} (record {name})")
    with open(rec["task_path"], encoding="utf-8", errors="replace") as f:
        task, (px, py) = parse_task(f.read(), rec["task_path"])
    img = open_image(rec["image_path"], name)
    w, h = image_size(img)
    check_inside([px, py], w, h, name, f"click point of {rec['task_path']}", tol=0.0)
    boxes = read_json(rec["box_path"], fatal=False, record=name)
    values = list(boxes.values()) if isinstance(boxes, dict) else boxes if isinstance(boxes, list) else None
    if values is None:
        raise RowError("malformed_json", f"{rec['box_path']}: expected a dict of element boxes")
    best = None
    for b in values:
        try:
            x1, y1 = (float(v) for v in b["top_left"])
            x2, y2 = (float(v) for v in b["bottom_right"])
        except (KeyError, TypeError, ValueError):
            raise RowError("malformed_json", f"{rec['box_path']}: element without top_left/bottom_right ({name})") from None
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if x1 <= px <= x2 and y1 <= py <= y2:
            area = (x2 - x1) * (y2 - y1)
            if best is None or area < best[0]:
                best = (area, [x1, y1, x2, y2])
    if best is None:
        raise RowError("no_box", f"{rec['box_path']}: no element box contains the click ({px:g}, {py:g}) ({name})")
    box = best[1]
    check_inside(box, w, h, name, f"element box in {rec['box_path']}")
    box = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
    obj = make_object(box, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], w, h)
    return [build_row(data_source="omniact", question=question_of(task), image_bytes=frame_image_bytes(img, opts.image_format),
                      ground_truth=labels_json([obj]), row_id=rec["id"], split=opts.split, width=w, height=h)]


def parser():
    p = make_parser(
        "python -m data_prep.omniact", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.omniact --root omniact --split test --out data/omniact_test.parquet",
        default_format="png",
    )
    p.add_argument("--root", required=True, help="OmniACT root (train.json/val.json/test.json and the unzipped data/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test"))
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "omniact", records, convert, lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
