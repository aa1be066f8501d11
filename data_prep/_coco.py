"""COCO-side helpers shared by the gRefCOCO and RefCOCO(+/g) converters: the instances.json
index, the refs file (a restricted unpickler for ``refs(*).p``), annotation -> mask -> label
object, and the record/convert pair (one record per ref, one row per sentence, the image encoded
once).

Masks come from ``pycocotools.mask`` (``frPyObjects`` / ``merge`` / ``decode``), as in the refer
API, ReLA (gres_model/data/datasets/grefer.py ``getMask``), LISA and Seg-Zero
(prepare_dataset/training_data_prepare_toturial.ipynb), so a mask here equals theirs pixel for
pixel; boxes and points are taken from those masks."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    check_inside,
    frame_image_bytes,
    image_size,
    labels_json,
    make_object,
    mask_object,
    normalize_question,
    open_image,
    read_json,
)

IMAGE_DIR_CANDIDATES = ("images/train2014", "images/mscoco/images/train2014", "train2014", "images")


@dataclass(frozen=True)
class CocoOpts:
    data_source: str
    image_format: str


class RefsUnpickler(pickle.Unpickler):
    """Unpickler for refer-style ``refs(*).p`` files. The official files hold only lists, dicts,
    strings and numbers, which unpickle without looking up any global, so ``find_class`` admits
    nothing: a file naming a callable (``os.system``, ...) is refused before anything runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"it references the global {module}.{name}; refs files hold only lists, dicts, strings and "
            "numbers, so nothing is loaded (a tampered or wrong file?)"
        )


def load_pickle(path: str):
    """The object in pickle file ``path`` via :class:`RefsUnpickler` (Python 2 pickles: latin1
    fallback); DataPrepError naming the file when it is malformed or references any global."""
    try:
        with open(path, "rb") as f:
            try:
                return RefsUnpickler(f).load()
            except UnicodeDecodeError:
                f.seek(0)
                return RefsUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataPrepError(f"refusing to load pickle {path}: {e}") from None


def load_refs(path: str) -> list[dict]:
    """refs(x).p (pickle, restricted: :func:`load_pickle`) or grefs(x).json (JSON list)."""
    if path.endswith(".json"):
        refs = read_json(path)
    else:
        refs = load_pickle(path)
    if not isinstance(refs, list):
        raise DataPrepError(f"{path}: expected a list of ref dicts, got {type(refs).__name__}")
    return refs


def load_instances(path: str) -> tuple[dict, dict]:
    """(images by id, annotations by id) of a COCO instances.json."""
    inst = read_json(path)
    if not isinstance(inst, dict) or "images" not in inst or "annotations" not in inst:
        raise DataPrepError(f"{path}: not a COCO instances file (needs 'images' and 'annotations')")
    images = {im["id"]: im for im in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    return images, anns


def find_image_dir(root: str, image_dir: str | None) -> str:
    if image_dir:
        if not os.path.isdir(image_dir):
            raise DataPrepError(f"missing image directory: {image_dir}")
        return image_dir
    for cand in IMAGE_DIR_CANDIDATES:
        for base in (root, os.path.dirname(os.path.abspath(root))):
            d = os.path.join(base, cand)
            if os.path.isdir(d):
                return d
    tried = ", ".join(os.path.join(root, c) for c in IMAGE_DIR_CANDIDATES)
    raise DataPrepError(f"no COCO train2014 image directory found (tried {tried}); pass --image-dir")


def sentences(ref: dict, which: str) -> list[tuple[str, str]]:
    """[(sent_id, text)] of a ref; text = raw (or sent), stripped of .?! and lowercased."""
    out = []
    for i, s in enumerate(ref.get("sentences") or []):
        text = normalize_question(s.get("raw") or s.get("sent") or "")
        if text:
            out.append((str(s.get("sent_id", i)), text))
    return out[:1] if which == "first" else out


def ref_records(
    refs: list[dict], images: dict, anns: dict, image_dir: str, split: str, which: str, source_file: str
) -> Iterator[dict]:
    """One record per ref of ``split`` (sorted by ref_id): image file, size, the target
    annotations (``[]`` = no target) and the sentences."""
    chosen = sorted((r for r in refs if r.get("split") == split), key=lambda r: r["ref_id"])
    if not chosen:
        present = sorted({str(r.get("split")) for r in refs})
        raise DataPrepError(f"{source_file}: no refs with split {split!r} (splits present: {', '.join(present)})")
    for ref in chosen:
        name = f"ref_id {ref['ref_id']} in {source_file}"
        ann_ids = ref.get("ann_id")
        ann_ids = list(ann_ids) if isinstance(ann_ids, (list, tuple)) else [ann_ids]
        targets = [a for a in ann_ids if a is not None and a != -1]
        rec = {"name": name, "ref_id": ref["ref_id"], "split": split, "sentences": sentences(ref, which)}
        if ref.get("no_target") and targets:
            rec["error"] = ("inconsistent_target", f"{name}: no_target is true but ann_id is {ann_ids}")
            yield rec
            continue
        im = images.get(ref.get("image_id"))
        if im is None:
            rec["error"] = ("missing_annotation", f"{name}: image_id {ref.get('image_id')} not in instances.json")
            yield rec
            continue
        rec["image_path"] = os.path.join(image_dir, im["file_name"])
        rec["expected_size"] = (im.get("width"), im.get("height"))
        missing = [a for a in targets if a not in anns]
        if missing:
            rec["error"] = ("missing_annotation", f"{name}: ann_id {missing} not in instances.json")
            yield rec
            continue
        rec["anns"] = [
            {k: anns[a].get(k) for k in ("id", "bbox", "segmentation", "iscrowd")} for a in targets
        ]
        yield rec


def dataset_records(args, ann_dir: str, refs_path: str):
    """Records of a refer-style dataset: refs file ``refs_path`` + ``ann_dir/instances.json`` +
    the COCO images (``--image-dir`` or found under ``--root``), for ``args.split``."""
    inst = os.path.join(ann_dir, "instances.json")
    if not os.path.isfile(inst):
        raise DataPrepError(f"missing COCO instances file: {inst}")
    refs = load_refs(refs_path)
    images, anns = load_instances(inst)
    image_dir = find_image_dir(args.root, args.image_dir)
    yield from ref_records(refs, images, anns, image_dir, args.split, args.sentences, refs_path)


def ann_mask(ann: dict, w: int, h: int, record: str) -> np.ndarray | None:
    """Boolean (h, w) mask of a COCO annotation, as pycocotools makes it: polygons ->
    ``decode(merge(frPyObjects(polys, h, w)))`` (polygons with < 3 points dropped, ReLA's filter),
    uncompressed RLE -> ``decode(frPyObjects(rle, h, w))``, compressed RLE -> ``decode(rle)``.
    None when there is no (valid) segmentation."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if not seg:
        return None
    if isinstance(seg, list):
        polys = [[float(v) for v in p] for p in seg if len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return None
        for p in polys:
            check_inside(p, w, h, record, f"segmentation of annotation {ann.get('id')}")
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise RowError(
                "coords_outside_image",
                f"RLE of annotation {ann.get('id')} ({record}) has size {seg['size']}, image is {h}x{w} (HxW)",
            )
        if isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            counts = seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"]
            rle = {"size": [h, w], "counts": counts}
    else:
        raise RowError("malformed_annotation", f"annotation {ann.get('id')} ({record}): unknown segmentation format")
    return mask_utils.decode(rle).astype(bool)


def ann_object(ann: dict, w: int, h: int, record: str) -> dict:
    """Label object of one annotation: mask extent + most interior pixel; the COCO bbox (and
    its centre) when there is no segmentation or it rasterises to nothing."""
    mask = ann_mask(ann, w, h, record)
    obj = mask_object(mask) if mask is not None else None
    if obj is not None:
        return obj
    bbox = ann.get("bbox")
    if not bbox or len(bbox) != 4:
        raise RowError("malformed_annotation", f"annotation {ann.get('id')} ({record}): no segmentation and no bbox")
    x, y, bw, bh = (float(v) for v in bbox)
    check_inside([x, y, x + bw, y + bh], w, h, record, f"bbox of annotation {ann.get('id')}")
    return make_object([x, y, x + bw, y + bh], [x + bw / 2, y + bh / 2], w, h)


def target_anns(anns: list[dict]) -> list[dict]:
    """The annotations that become label objects: the non-crowd ones (ReLA's gRefCOCO loader
    drops ``iscrowd`` annotations of a ref); a ref whose targets are all crowd keeps them (ReLA
    keeps such a ref as a targeted, non-empty sample; its mask is the crowd RLE, as the refer
    API's getMask gives it)."""
    plain = [a for a in anns if not a.get("iscrowd")]
    return plain or list(anns)


def convert_ref(rec: dict, opts: CocoOpts) -> list[dict]:
    name = rec["name"]
    if "error" in rec:
        raise RowError(*rec["error"])
    if not rec["sentences"]:
        raise RowError("no_sentence", f"{name}: no non-empty sentence")
    img = open_image(rec["image_path"], name)
    w, h = image_size(img)
    ew, eh = rec["expected_size"]
    if ew and eh and (ew, eh) != (w, h):
        raise RowError(
            "size_mismatch", f"{rec['image_path']} ({name}) is {w}x{h}, instances.json says {ew}x{eh}"
        )
    anns = target_anns(rec["anns"])
    objects = [ann_object(a, w, h, name) for a in anns]
    gt = labels_json(objects)
    data = frame_image_bytes(img, opts.image_format)
    return [
        build_row(
            data_source=opts.data_source, question=text, image_bytes=data, ground_truth=gt,
            row_id=f"{rec['ref_id']}_{sent_id}", split=rec["split"], width=w, height=h,
        )
        for sent_id, text in rec["sentences"]
    ]
