"""The public ViSurf training mix (7,299 rows; HF parquet with columns ``id, problem, solution,
image, img_height, img_width``) -> verl parquet (data_source ``visurf_mix``).

``solution`` is already in the 840 frame: the JSON list ``[{"bbox_2d", "point_2d"}, ...]``
(``"[]"``, empty, ``null`` or ``none`` = non-object) or the older Seg-Zero form
``<box>(x1,y1),(x2,y2)</box><points>(x,y),...</points>`` (first point kept; several objects: one
``<box>`` + ``<points>`` pair each). Labels are
validated (4 + 2 integers inside the frame, x1 <= x2, y1 <= y2, point inside its box), never
rescaled. Images already 840x840 are copied byte for byte; others are resized to 840x840.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass

from data_prep.common import (
    RowError,
    build_row,
    encode_image,
    hf_image_source,
    iter_parquet_rows,
    labels_json,
    make_parser,
    normalize_question,
    open_image,
    resize_to_frame,
    run_cli,
)
from verl_ext.constants import BBOX_KEY, FRAME, POINT_KEY

COLUMNS = ("id", "problem", "solution", "image", "img_height", "img_width")
OLD_BOX = re.compile(r"<box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>")
OLD_POINT = re.compile(r"<points>\((\d+),(\d+)\)")
NON_OBJECT = {"", "[]", "null", "none"}


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str


def _ints(v, n: int, what: str, record: str) -> list[int]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise RowError("malformed_label", f"record {record}: {what} {v!r} is not a list of {n} numbers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise RowError("malformed_label", f"record {record}: {what} {v!r} has a non-number")
        out.append(round(x))
    return out


def parse_solution(text: str | None, record: str) -> list[dict]:
    """Objects of a ViSurf/Seg-Zero ``solution`` string, validated in the 840 frame."""
    s = "" if text is None else str(text).strip()
    if s.lower() in NON_OBJECT:
        return []
    boxes = OLD_BOX.findall(s)
    if boxes:
        items = seg_zero_objects(boxes, OLD_POINT.findall(s), record)
    else:
        try:
            items = json.loads(s)
        except json.JSONDecodeError as e:
            raise RowError("malformed_label", f"record {record}: solution is not JSON ({e.msg}): {s[:80]!r}") from None
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise RowError("malformed_label", f"record {record}: solution is not a list: {s[:80]!r}")
    objects = []
    for it in items:
        if not isinstance(it, dict) or BBOX_KEY not in it:
            raise RowError("malformed_label", f"record {record}: object without {BBOX_KEY}: {it!r}")
        x1, y1, x2, y2 = _ints(it[BBOX_KEY], 4, BBOX_KEY, record)
        if POINT_KEY in it:
            px, py = _ints(it[POINT_KEY], 2, POINT_KEY, record)
        else:
            px, py = (x1 + x2) // 2, (y1 + y2) // 2
        if min(x1, y1, x2, y2, px, py) < 0 or max(x1, y1, x2, y2, px, py) > FRAME:
            raise RowError("coords_outside_image", f"record {record}: {it!r} outside the {FRAME} frame")
        if x1 > x2 or y1 > y2:
            raise RowError("malformed_label", f"record {record}: box {it[BBOX_KEY]} has x1 > x2 or y1 > y2")
        if not (x1 <= px <= x2 and y1 <= py <= y2):
            raise RowError("point_outside_box", f"record {record}: point {[px, py]} outside box {[x1, y1, x2, y2]}")
        clamp = lambda v: min(v, FRAME - 1)
        objects.append({BBOX_KEY: [clamp(x1), clamp(y1), clamp(x2), clamp(y2)], POINT_KEY: [clamp(px), clamp(py)]})
    return objects


def seg_zero_objects(boxes: list[tuple], points: list[tuple], record: str) -> list[dict]:
    """Objects of the Seg-Zero form: the k-th ``<box>`` with the first point of the k-th
    ``<points>`` (every box its centre when there is no ``<points>``). RowError when boxes and
    ``<points>`` groups do not pair up (one of several objects must not be kept silently)."""
    if points and len(points) != len(boxes):
        raise RowError("malformed_label", f"record {record}: {len(boxes)} <box> but {len(points)} <points> in the "
                       "solution; each box needs its points")
    out = []
    for k, b in enumerate(boxes):
        box = [int(v) for v in b]
        point = [int(v) for v in points[k]] if points else [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]
        out.append({BBOX_KEY: box, POINT_KEY: point})
    return out


def records(args):
    for path in args.hf_parquet:
        base = os.path.dirname(os.path.abspath(path))
        for i, r in enumerate(iter_parquet_rows(path, columns=COLUMNS)):
            name = f"row {i} (id {r['id']}) in {path}"
            rec = {"name": name, "id": str(r["id"]), "problem": r["problem"], "solution": r["solution"],
                   "width": r["img_width"], "height": r["img_height"]}
            try:
                rec["image"] = hf_image_source(r["image"], base, name)
            except RowError as e:
                rec["error"] = (e.reason, e.message)
            yield rec


def convert(rec: dict, opts: Opts) -> list[dict]:
    if "error" in rec:
        raise RowError(*rec["error"])
    name = rec["name"]
    question = normalize_question(rec["problem"] or "")
    if not question:
        raise RowError("no_question", f"record {name}: empty problem")
    objects = parse_solution(rec["solution"], name)
    src = rec["image"]
    img = open_image(src, name)
    if img.size == (FRAME, FRAME) and isinstance(src, bytes) and img.format in ("PNG", "JPEG"):
        data = src  # already in the frame: keep the original bytes
    else:
        data = encode_image(resize_to_frame(img), opts.image_format)
    w, h = rec["width"] or FRAME, rec["height"] or FRAME
    return [build_row(data_source="visurf_mix", question=question, image_bytes=data, ground_truth=labels_json(objects),
                      row_id=rec["id"], split=opts.split, width=w, height=h)]


def parser():
    p = make_parser(
        "python -m data_prep.visurf_mix", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.visurf_mix --hf-parquet mix/data/train-*.parquet --out data/visurf_mix_train.parquet --workers 4",
    )
    p.add_argument("--hf-parquet", nargs="+", required=True, metavar="FILE", help="parquet file(s) of the mix (in order)")
    p.add_argument("--split", default="train", help="value of extra_info.split (default train)")
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "visurf_mix", records, convert, lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
