"""ReasonSeg (LISA) -> verl parquet (data_source ``reasonseg``).

Reads ``ROOT/<split>/*.jpg`` with the LabelMe-style ``<name>.json`` beside each image (``ROOT``
is the ``ReasonSeg`` directory). The target mask follows LISA's rules: ``flag`` shapes dropped,
polygons filled largest-first, ``ignore`` shapes excluded from the target. Each 8-connected
component of the target mask is one object (box = extent, point = most interior pixel, 840
frame); a sample whose target mask is empty is kept as a non-object row (label ``[]``), as LISA
and VisionReasoner keep it (an empty prediction scores 1 there), so every sample of a split is
converted. The question is ``text[0]`` (``--all-texts``: one row per text variant).
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    check_inside,
    frame_image_bytes,
    image_size,
    labels_json,
    make_parser,
    mask_components,
    mask_object,
    normalize_question,
    open_image,
    read_json,
    require_dir,
    run_cli,
)


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str
    all_texts: bool


def target_mask(shapes: list, w: int, h: int, record: str) -> np.ndarray:
    """LISA's get_mask_from_json: 1 = target, 255 = ignore, smaller shapes drawn last."""
    polys = []
    for i, sh in enumerate(shapes):
        label = str(sh.get("label", ""))
        if label.lower() == "flag":
            continue
        pts = np.asarray(sh.get("points") or [], dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        check_inside(pts, w, h, record, f"shape {i} ({label!r})")
        area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
        polys.append((area, 255 if "ignore" in label.lower() else 1, [tuple(p) for p in pts]))
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for _, value, pts in sorted(polys, key=lambda t: -t[0]):
        draw.polygon(pts, fill=value, outline=value)
    return np.array(canvas) == 1


def records(args):
    d = require_dir(os.path.join(args.root, args.split), f"ReasonSeg {args.split} directory")
    paths = sorted(glob.glob(os.path.join(d, "*.jpg")))
    if not paths:
        raise DataPrepError(f"no *.jpg files in {d}")
    for p in paths:
        yield {"name": os.path.basename(p), "image_path": p, "json_path": p[: -len(".jpg")] + ".json"}


def convert(rec: dict, opts: Opts) -> list[dict]:
    name = rec["name"]
    ann = read_json(rec["json_path"], fatal=False, record=name)
    if not isinstance(ann, dict) or not isinstance(ann.get("shapes"), list):
        raise RowError("malformed_json", f"{rec['json_path']}: expected an object with a 'shapes' list")
    texts = ann.get("text")
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    texts = [normalize_question(t) for t in texts if str(t).strip()]
    if not texts:
        raise RowError("no_sentence", f"{rec['json_path']}: empty 'text'")
    img = open_image(rec["image_path"], name)
    w, h = image_size(img)
    mask = target_mask(ann["shapes"], w, h, f"{rec['json_path']}")
    objects = [mask_object(c) for c in mask_components(mask)]  # [] = no target: a non-object row
    gt = labels_json(objects)
    data = frame_image_bytes(img, opts.image_format)
    stem = os.path.splitext(name)[0]
    chosen = texts if opts.all_texts else texts[:1]
    return [
        build_row(data_source="reasonseg", question=t, image_bytes=data, ground_truth=gt,
                  row_id=stem if len(chosen) == 1 else f"{stem}_{i}", split=opts.split, width=w, height=h)
        for i, t in enumerate(chosen)
    ]


def parser():
    p = make_parser(
        "python -m data_prep.reasonseg", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.reasonseg --root dataset/reason_seg/ReasonSeg --split val --out data/reasonseg_val.parquet",
    )
    p.add_argument("--root", required=True, help="the ReasonSeg directory (holding train/ val/ test/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test"))
    p.add_argument("--all-texts", action="store_true", help="one row per entry of 'text' (default: text[0] only)")
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "reasonseg", records, convert,
                   lambda a: Opts(image_format=a.image_format, split=a.split, all_texts=a.all_texts))


if __name__ == "__main__":
    sys.exit(main())
