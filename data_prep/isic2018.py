"""ISIC 2018 Task 1 (lesion boundary segmentation) -> verl parquet (data_source ``isic2018``).

Reads ``ROOT/ISIC2018_Task1-2_<Split>_Input/ISIC_*.jpg`` and the masks
``ROOT/ISIC2018_Task1_<Split>_GroundTruth/ISIC_*_segmentation.png`` (values > 127 = lesion).
One lesion per image: box = mask extent, point = most interior mask pixel (840 frame).
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

import numpy as np

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    frame_image_bytes,
    image_size,
    labels_json,
    make_parser,
    mask_object,
    open_image,
    require_dir,
    run_cli,
)

SPLIT_DIR = {"training": "Training", "validation": "Validation", "test": "Test"}


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str


def records(args):
    part = SPLIT_DIR[args.split]
    in_dir = require_dir(os.path.join(args.root, f"ISIC2018_Task1-2_{part}_Input"), "ISIC input directory")
    gt_dir = require_dir(os.path.join(args.root, f"ISIC2018_Task1_{part}_GroundTruth"), "ISIC ground-truth directory")
    paths = sorted(glob.glob(os.path.join(in_dir, "ISIC_*.jpg")))
    if not paths:
        raise DataPrepError(f"no ISIC_*.jpg files in {in_dir}")
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        yield {"name": stem, "image_path": p, "mask_path": os.path.join(gt_dir, f"{stem}_segmentation.png")}


def convert(rec: dict, opts: Opts) -> list[dict]:
    name = rec["name"]
    img = open_image(rec["image_path"], name)
    w, h = image_size(img)
    m = open_image_mask(rec["mask_path"], name)
    if m.shape != (h, w):
        raise RowError("size_mismatch", f"{rec['mask_path']} is {m.shape[1]}x{m.shape[0]}, image {name} is {w}x{h}")
    obj = mask_object(m)
    if obj is None:
        raise RowError("empty_mask", f"{rec['mask_path']}: empty lesion mask (record {name})")
    return [build_row(data_source="isic2018", question="skin lesion", image_bytes=frame_image_bytes(img, opts.image_format),
                      ground_truth=labels_json([obj]), row_id=name, split=opts.split, width=w, height=h)]


def open_image_mask(path: str, record: str, threshold: int = 127) -> np.ndarray:
    """A single-channel mask file as bool (> threshold); RowError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise RowError("missing_file", f"missing mask file: {path} (record {record})")
    try:
        with Image.open(path) as m:
            return np.array(m.convert("L")) > threshold
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RowError("unreadable_image", f"unreadable mask {path} (record {record}): {e}") from None


def parser():
    p = make_parser(
        "python -m data_prep.isic2018", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.isic2018 --root ISIC2018 --split validation --out data/isic2018_val.parquet",
    )
    p.add_argument("--root", required=True, help="directory holding the unzipped ISIC2018_Task1* folders")
    p.add_argument("--split", required=True, choices=tuple(SPLIT_DIR))
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "isic2018", records, convert,
                   lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
