"""RefCOCO / RefCOCO+ / RefCOCOg (refer API layout) -> verl parquet (data_source = the dataset).

Reads ``ROOT/<dataset>/refs(<split_by>).p`` (pickle) and ``ROOT/<dataset>/instances.json``;
images from ``ROOT/images/train2014`` (or ``ROOT/images/mscoco/images/train2014``, or
``--image-dir``). One row per (ref, sentence), one object (the referred annotation): mask from
pycocotools (as the refer API), box = mask extent, point = most interior mask pixel, in the 840
frame. The refs pickle is loaded with a restricted unpickler (plain data only).
"""

from __future__ import annotations

import os
import sys

from data_prep import _coco
from data_prep.common import DataPrepError, make_parser, run_cli

SPLITS_BY = {"unc": ("train", "val", "testA", "testB"), "umd": ("train", "val", "test"), "google": ("train", "val")}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def parser():
    p = make_parser(
        "python -m data_prep.refcoco", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.refcoco --root refer_seg --dataset refcocog --split-by umd --split val "
        "--out data/refcocog_val.parquet",
    )
    p.add_argument("--root", required=True, help="directory holding refcoco/, refcoco+/, refcocog/")
    p.add_argument("--dataset", required=True, choices=tuple(DEFAULT_SPLIT_BY))
    p.add_argument("--split-by", choices=tuple(SPLITS_BY), default=None,
                   help="unc (refcoco, refcoco+), umd or google (refcocog); default per dataset")
    p.add_argument("--split", required=True, help="unc: train/val/testA/testB; umd: train/val/test; google: train/val")
    p.add_argument("--image-dir", default=None, help="COCO train2014 images")
    p.add_argument("--sentences", choices=("all", "first"), default="all",
                   help="one row per sentence (all, default) or only the first sentence of each ref")
    return p


def _split_by(args) -> str:
    return args.split_by or DEFAULT_SPLIT_BY[args.dataset]


def records(args):
    split_by = _split_by(args)
    if args.split not in SPLITS_BY[split_by]:
        raise DataPrepError(f"split {args.split!r} does not exist for split_by {split_by} "
                            f"(choose {', '.join(SPLITS_BY[split_by])})")
    d = os.path.join(args.root, args.dataset)
    refs_path = os.path.join(d, f"refs({split_by}).p")
    if not os.path.isfile(refs_path):
        raise DataPrepError(f"missing refs file: {refs_path}")
    yield from _coco.dataset_records(args, d, refs_path)


def main(argv=None) -> int:
    return run_cli(
        argv, parser(), lambda a: a.dataset, records, _coco.convert_ref,
        lambda a: _coco.CocoOpts(data_source=a.dataset, image_format=a.image_format),
    )

if __name__ == "__main__":
    sys.exit(main())
