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


DUPLICATE = "duplicate"  # an index value: the id appears more than once, so which entry is meant is unknown


def bad_record(name: str, reason: str, message: str) -> dict:
    """A record the driver skips with ``reason`` (``--strict`` aborts on it): a bad index entry."""
    return {"name": name, "error": (reason, message)}


def _short(value) -> str:
    return repr(value)[:120]


def _hashable_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool) and value != ""


def index_entries(entries, what: str, required: tuple[str, ...], path: str) -> tuple[dict, list[dict]]:
    """``{id: entry}`` of the COCO ``images`` / ``annotations`` list, and a :func:`bad_record` for
    each entry that cannot be indexed: not a dict, without one of ``required`` (an id must be an
    int or a string), or an id that appears more than once (indexed as ``DUPLICATE``: a ref
    pointing at it is skipped, naming the repeat)."""
    by_id: dict = {}
    bad: list[dict] = []
    counts: dict = {}
    for i, e in enumerate(entries):
        name = f"{what} entry {i} of {path}"
        if not isinstance(e, dict):
            bad.append(bad_record(name, "malformed_index", f"{name}: not a dict ({_short(e)})"))
            continue
        lacking = [k for k in required if e.get(k) in (None, "")]
        if lacking or not _hashable_id(e["id"]):
            why = f"no {'/'.join(lacking)}" if lacking else f"id {_short(e['id'])} is not an int or a string"
            bad.append(bad_record(name, "malformed_index", f"{name}: {why} ({_short(e)})"))
            continue
        counts[e["id"]] = counts.get(e["id"], 0) + 1
        by_id[e["id"]] = e if counts[e["id"]] == 1 else DUPLICATE
    for key, n in counts.items():
        if n > 1:
            bad.append(bad_record(f"{what} id {key!r} of {path}", "duplicate_id",
                                  f"{what} id {key!r} appears {n} times in {path}; refs to it are skipped"))
    return by_id, bad


def load_instances(path: str) -> tuple[dict, dict, list[dict]]:
    """(images by id, annotations by id, bad-entry records) of a COCO instances.json
    (:func:`index_entries`: one bad entry is skipped with its reason, it does not stop the run).
    DataPrepError when the file is not a COCO instances file at all."""
    inst = read_json(path)
    if not isinstance(inst, dict) or not isinstance(inst.get("images"), list) or \
            not isinstance(inst.get("annotations"), list):
        raise DataPrepError(f"{path}: not a COCO instances file (needs the lists 'images' and 'annotations')")
    images, bad_images = index_entries(inst["images"], "image", ("id", "file_name"), path)
    anns, bad_anns = index_entries(inst["annotations"], "annotation", ("id",), path)
    return images, anns, bad_images + bad_anns


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
    """[(sent_id, text)] of a ref; text = raw (or sent), stripped of .?! and lowercased. A sentence
    given as a plain string is its text. RowError (``malformed_index``) for a ``sentences`` value
    that is not a list or a sentence that is neither a dict nor a string."""
    sents = ref.get("sentences") or []
    if not isinstance(sents, list):
        raise RowError("malformed_index", f"sentences is {_short(sents)}, expected a list")
    out = []
    for i, s in enumerate(sents):
        if isinstance(s, str):
            raw, sent_id = s, i
        elif isinstance(s, dict):
            raw, sent_id = s.get("raw") or s.get("sent") or "", s.get("sent_id", i)
        else:
            raise RowError("malformed_index", f"sentence {i} is {_short(s)}, expected a dict with raw/sent")
        text = normalize_question(raw if isinstance(raw, str) else "")
        if text:
            out.append((str(sent_id), text))
    return out[:1] if which == "first" else out


def ref_order(ref_id) -> tuple:
    """Sort key of a ref_id: numbers (ints, digit strings) in numeric order, then other strings."""
    text = str(ref_id)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def ref_records(
    refs: list, images: dict, anns: dict, image_dir: str, split: str, which: str, source_file: str
) -> Iterator[dict]:
    """One record per ref of ``split`` (sorted by ref_id, :func:`ref_order`): image file, size, the
    target annotations (``[]`` = no target) and the sentences. A ref that cannot be read (not a
    dict, no ref_id, a repeated ref_id, malformed sentences or ids, an image or annotation the
    index lacks or holds twice) gives a :func:`bad_record` naming it: skipped with the reason,
    ``--strict`` aborts."""
    chosen, seen, unreadable = [], set(), []
    for i, r in enumerate(refs):
        if not isinstance(r, dict):
            unreadable.append(f"entry {i} of {source_file}: not a ref dict ({_short(r)})")
            yield bad_record(f"entry {i} of {source_file}", "malformed_index", unreadable[-1])
            continue
        if r.get("split") != split:
            continue
        rid = r.get("ref_id")
        if not _hashable_id(rid):
            yield bad_record(f"entry {i} of {source_file}", "malformed_index",
                             f"entry {i} of {source_file}: ref without a ref_id (int or string): {_short(r)}")
            continue
        if str(rid) in seen:
            yield bad_record(f"ref_id {rid} in {source_file}", "duplicate_id",
                             f"ref_id {rid} appears more than once in {source_file} (split {split}); the repeat "
                             f"(entry {i}) is skipped")
            continue
        seen.add(str(rid))
        chosen.append(r)
    if not chosen:
        present = sorted({str(r.get("split")) for r in refs if isinstance(r, dict)})
        raise DataPrepError(f"{source_file}: no refs with split {split!r} (splits present: {', '.join(present)})"
                            + (f"; {len(unreadable)} of {len(refs)} entries are not ref dicts, e.g. {unreadable[0]}"
                               if unreadable else ""))
    for ref in sorted(chosen, key=lambda r: ref_order(r["ref_id"])):
        name = f"ref_id {ref['ref_id']} in {source_file}"
        try:
            rec = {"name": name, "ref_id": ref["ref_id"], "split": split, "sentences": sentences(ref, which)}
        except RowError as e:
            yield bad_record(name, e.reason, f"{name}: {e.message}")
            continue
        ann_ids = ref.get("ann_id")
        ann_ids = list(ann_ids) if isinstance(ann_ids, (list, tuple)) else [ann_ids]
        targets = [a for a in ann_ids if a is not None and a != -1]
        if not all(_hashable_id(a) for a in targets):
            yield bad_record(name, "malformed_index", f"{name}: ann_id {_short(ref.get('ann_id'))} is not a list of ids")
            continue
        if ref.get("no_target") and targets:
            yield bad_record(name, "inconsistent_target", f"{name}: no_target is true but ann_id is {ann_ids}")
            continue
        image_id = ref.get("image_id")
        im = images.get(image_id) if _hashable_id(image_id) else None
        if im is None or im is DUPLICATE:
            held = "appears more than once in" if im is DUPLICATE else "not in"
            yield bad_record(name, "duplicate_id" if im is DUPLICATE else "missing_annotation",
                             f"{name}: image_id {_short(image_id)} {held} instances.json")
            continue
        rec["image_path"] = os.path.join(image_dir, str(im["file_name"]))
        rec["expected_size"] = (im.get("width"), im.get("height"))
        missing = [a for a in targets if a not in anns]
        repeated = [a for a in targets if anns.get(a) is DUPLICATE]
        if missing or repeated:
            held = f"ann_id {missing} not in instances.json" if missing else \
                f"ann_id {repeated} appears more than once in instances.json"
            yield bad_record(name, "missing_annotation" if missing else "duplicate_id", f"{name}: {held}")
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
    images, anns, bad_entries = load_instances(inst)
    image_dir = find_image_dir(args.root, args.image_dir)
    yield from bad_entries
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
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise RowError("malformed_annotation", f"annotation {ann.get('id')} ({record}): no segmentation and no bbox")
    try:
        x, y, bw, bh = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise RowError("malformed_annotation", f"annotation {ann.get('id')} ({record}): bbox {bbox} is not "
                       "four numbers") from None
    if not bw > 0 or not bh > 0:
        raise RowError("malformed_annotation", f"annotation {ann.get('id')} ({record}): bbox {bbox} has width "
                       f"{bw:g} / height {bh:g}; a COCO bbox is [x, y, width, height] with both > 0")
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
