"""Real-IAD (industrial anomaly detection) -> verl parquet (data_source ``realiad``).

Reads ``ROOT/<json-dir>/<category>.json`` (or ``ROOT/<json-dir>/<json-dir>/``, the layout the
official archive unzips to; ``{"meta": {"prefix", "normal_class"}, "train": [...],
"test": [...]}``, samples ``{category, anomaly_class, image_path, mask_path}``) and the images
under ``ROOT/<image-dir>/<prefix>/<image_path>``. A normal sample (``anomaly_class`` =
normal class, or ``mask_path`` null: an NG view where the defect is not visible) is a
non-object row with label ``[]``; a defect mask (nonzero = anomaly) gives one object per
8-connected component (box = extent, point = most interior pixel, 840 frame).
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    frame_image_bytes,
    image_size,
    labels_json,
    make_parser,
    mask_components,
    mask_object,
    open_image,
    read_json,
    require_dir,
    run_cli,
)
from data_prep.isic2018 import open_image_mask

CATEGORIES = (
    "audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood", "mint", "mounts", "pcb",
    "phone_battery", "plastic_nut", "plastic_plug", "porcelain_doll", "regulator", "rolled_strip_base",
    "sim_card_set", "switch", "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1", "u_block",
    "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper",
)


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str


def resolve(image_root: str, prefix: str, category: str, rel: str) -> str:
    """First existing of image_root/prefix/rel, image_root/category/rel, image_root/rel."""
    cands = [os.path.join(image_root, prefix, rel), os.path.join(image_root, category, rel), os.path.join(image_root, rel)]
    for c in cands:
        if os.path.isfile(c):
            return c
    return cands[0]


def find_json_dir(root: str, json_dir: str) -> str:
    """``ROOT/<json-dir>``, or ``ROOT/<json-dir>/<json-dir>`` when the JSONs are only there (the
    official realiad_jsons.zip unzips to realiad_jsons/realiad_jsons/). DataPrepError naming
    both when neither exists."""
    top = os.path.join(root, json_dir)
    nested = os.path.join(top, os.path.basename(os.path.normpath(json_dir)))
    if os.path.isdir(nested) and not glob.glob(os.path.join(top, "*.json")):
        return nested
    if not os.path.isdir(top):
        raise DataPrepError(f"missing Real-IAD json directory: {top} (nor {nested})")
    return top


def records(args):
    json_dir = find_json_dir(args.root, args.json_dir)
    image_root = require_dir(os.path.join(args.root, args.image_dir), "Real-IAD image directory")
    if args.category == "all":
        files = sorted(glob.glob(os.path.join(json_dir, "*.json")))
        if not files:
            raise DataPrepError(f"no <category>.json files in {json_dir}")
    else:
        files = [os.path.join(json_dir, f"{args.category}.json")]
    for jf in files:
        meta_all = read_json(jf)
        problem = file_problem(meta_all, args.split)
        if problem:  # this category file as a whole: skipped with the reason (--strict aborts)
            yield {"name": jf, "error": ("malformed_json", f"{jf}: {problem}")}
            continue
        meta = meta_all["meta"]
        prefix = str(meta.get("prefix") or "")
        normal = meta.get("normal_class", "OK")
        for i, s in enumerate(meta_all[args.split]):
            name = f"{args.split}[{i}] of {jf}"
            problem = sample_problem(s)
            if problem:
                yield {"name": name, "error": ("malformed_json", f"{name}: {problem}")}
                continue
            cat = str(s.get("category") or os.path.splitext(os.path.basename(jf))[0])
            normal_sample = s.get("mask_path") in (None, "") or s.get("anomaly_class") == normal
            yield {
                "name": name,
                "id": os.path.splitext(s["image_path"].replace("\\", "/"))[0].replace("/", "_"),
                "category": cat,
                "image_path": resolve(image_root, prefix, cat, s["image_path"]),
                "mask_path": None if normal_sample else resolve(image_root, prefix, cat, s["mask_path"]),
            }


def file_problem(meta_all, split: str) -> str:
    """What is wrong with a ``<category>.json`` as a whole ("" when nothing): a dict with a dict
    ``meta`` and a list ``split``."""
    if not isinstance(meta_all, dict):
        return f"expected a dict with keys 'meta' and {split!r}, got {type(meta_all).__name__}"
    missing = [k for k in ("meta", split) if k not in meta_all]
    if missing:
        return f"expected keys 'meta' and {split!r}; missing {', '.join(map(repr, missing))}"
    if not isinstance(meta_all["meta"], dict):
        return f"'meta' is {repr(meta_all['meta'])[:80]}, expected a dict (prefix, normal_class)"
    if not isinstance(meta_all[split], list):
        return f"{split!r} is a {type(meta_all[split]).__name__}, expected a list of samples"
    return ""


def sample_problem(sample) -> str:
    """What is wrong with one sample entry ("" when nothing): a dict with a non-empty string
    ``image_path`` and a ``mask_path`` that is a string or null."""
    if not isinstance(sample, dict):
        return f"not a dict ({repr(sample)[:120]})"
    path = sample.get("image_path")
    if not isinstance(path, str) or not path.strip():
        return f"image_path is {path!r}, expected a path"
    mask = sample.get("mask_path")
    if mask is not None and not isinstance(mask, str):
        return f"mask_path is {mask!r}, expected a path or null"
    return ""


def convert(rec: dict, opts: Opts) -> list[dict]:
    if "error" in rec:
        raise RowError(*rec["error"])
    name = rec["name"]
    img = open_image(rec["image_path"], name)
    w, h = image_size(img)
    objects = []
    if rec["mask_path"] is not None:
        m = open_image_mask(rec["mask_path"], name, threshold=0)
        if m.shape != (h, w):
            raise RowError("size_mismatch", f"{rec['mask_path']} is {m.shape[1]}x{m.shape[0]}, image is {w}x{h} ({name})")
        objects = [mask_object(c) for c in mask_components(m)]
        if not objects:
            raise RowError("empty_mask", f"{rec['mask_path']}: defect sample with an empty mask ({name})")
    return [build_row(data_source="realiad", question=rec["category"].replace("_", " "),
                      image_bytes=frame_image_bytes(img, opts.image_format), ground_truth=labels_json(objects),
                      row_id=rec["id"], split=opts.split, width=w, height=h)]


def parser():
    p = make_parser(
        "python -m data_prep.realiad", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.realiad --root Real-IAD --category all --split test --out data/realiad_test.parquet",
    )
    p.add_argument("--root", required=True, help="Real-IAD root (holding realiad_jsons/ and realiad_1024/)")
    p.add_argument("--category", required=True, help=f"a category ({', '.join(CATEGORIES[:3])}, ...) or 'all'")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--json-dir", default="realiad_jsons", help="json directory under ROOT (e.g. realiad_jsons_sv)")
    p.add_argument("--image-dir", default="realiad_1024", help="image directory under ROOT (realiad_256/512/1024/raw)")
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "realiad", records, convert, lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
