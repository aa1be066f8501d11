"""gRefCOCO (GRES/GREC) -> verl parquet (data_source ``grefcoco``).

Reads ``ROOT/grefcoco/grefs(unc).json`` (or ``.p``) and ``ROOT/grefcoco/instances.json``; images
from ``ROOT/images/train2014`` (or ``--image-dir``). One row per (ref, sentence); a
multi-target ref gives one object per annotation; a no-target ref (``ann_id == [-1]``) gives a
non-object row with label ``[]``. Masks are pycocotools' (``data_prep._coco.ann_mask``); boxes
are mask extents, points the most interior mask pixel, in the 840 frame. ``iscrowd``
annotations of a ref with other targets are dropped, a ref whose targets are all crowd keeps
them (both as ReLA's loader, gres_model/data/datasets/grefcoco.py).
"""

from __future__ import annotations

import os
import sys

from data_prep import _coco
from data_prep.common import DataPrepError, make_parser, run_cli

SPLITS = ("train", "val", "testA", "testB")


def parser():
    p = make_parser(
        "python -m data_prep.grefcoco", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.grefcoco --root datasets --split val --out data/grefcoco_val.parquet --workers 4",
    )
    p.add_argument("--root", required=True, help="directory holding grefcoco/ (or the grefcoco/ directory itself)")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--split-by", default="unc", help="refs file suffix: grefs(SPLIT_BY).json (default unc)")
    p.add_argument("--image-dir", default=None, help="COCO train2014 images (default: ROOT/images/train2014)")
    p.add_argument("--sentences", choices=("all", "first"), default="all",
                   help="one row per sentence (all, default) or only the first sentence of each ref")
    return p


def ann_dir(root: str) -> str:
    """ROOT/grefcoco if it exists, else ROOT itself (the user pointed at grefcoco/)."""
    d = os.path.join(root, "grefcoco")
    return d if os.path.isdir(d) else root


def records(args):
    d = ann_dir(args.root)
    refs_path = os.path.join(d, f"grefs({args.split_by}).json")
    if not os.path.isfile(refs_path):
        alt = os.path.join(d, f"grefs({args.split_by}).p")
        if not os.path.isfile(alt):
            raise DataPrepError(f"missing gRefCOCO refs file: {refs_path}")
        refs_path = alt
    yield from _coco.dataset_records(args, d, refs_path)


def main(argv=None) -> int:
    return run_cli(
        argv, parser(), "grefcoco", records, _coco.convert_ref,
        lambda a: _coco.CocoOpts(data_source="grefcoco", image_format=a.image_format),
    )


if __name__ == "__main__":
    sys.exit(main())
