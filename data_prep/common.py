"""Shared machinery of the data-prep CLIs: 840-frame geometry, label building, the verl row
schema, an atomic streaming parquet writer, and the common CLI driver.

A source module (``data_prep.grefcoco``, ...) supplies two things:

* ``records(args)`` - a generator of small, picklable record descriptions (paths and
  annotations, never decoded images; HF-parquet sources carry the encoded bytes of one row).
  Runs in the main process; a fatal problem with the *index* (missing annotation file,
  malformed split JSON) raises :class:`DataPrepError`.
* ``convert(record, opts)`` - runs in a worker: loads the image, builds the label, returns a
  list of rows (one source record may give several rows, e.g. one per sentence, sharing one
  encoded image). A problem with *this record* raises :class:`RowError` with a short
  ``reason`` key and a message naming the file and record; the driver skips and counts it
  (or aborts with ``--strict``).

:func:`run_cli` then streams rows through an order-preserving bounded process pool into
:class:`AtomicParquetWriter` and prints the summary table. Memory stays bounded: at most
``window`` records are in flight and at most one row group of encoded images is buffered.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from verl_ext.atomic_io import AtomicFile, DestinationError
from verl_ext.constants import (
    BBOX_KEY,
    DATA_SOURCE_TASK,
    DEFAULT_PROMPT_STYLE,
    FRAME,
    MAX_OBJECTS,
    POINT_KEY,
    PROMPT_STYLES,
    TASK_ABILITY,
    build_prompt,
    prompt_style,
    task_of,
)
from verl_ext.coords import COORDS, DEFAULT_COORDS, prompt_hint
from verl_ext.coords import EXTRA_INFO_KEY as COORDS_KEY

logger = logging.getLogger("data_prep")

Image.MAX_IMAGE_PIXELS = 400_000_000  # ISIC has 6000x4000 images; still guards against bombs

JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # fast; PNG stays lossless at every level
ROW_GROUP_ROWS = 256
ROW_GROUP_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class DataPrepError(Exception):
    """A fatal problem with the source as a whole (missing index file, bad arguments)."""


class RowError(Exception):
    """A problem with one record. ``reason`` is a short key for the summary table; the message
    names the file and the record."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across the process pool
        return (RowError, (self.reason, self.message))


# ---------------------------------------------------------------------------------------------
# Files, JSON, images
# ---------------------------------------------------------------------------------------------
def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """``path`` as str; DataPrepError naming it when it does not exist."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataPrepError(f"missing {what}: {path}")
    return path


def require_dir(path: str | os.PathLike, what: str = "directory") -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataPrepError(f"missing {what}: {path}")
    return path


def read_json(path: str, *, fatal: bool = True, record: str = "", encodings=("utf-8", "cp1252")) -> Any:
    """Load a JSON file, trying each encoding in turn (ReasonSeg has cp1252 files).

    Errors name the file (and ``record``): DataPrepError when ``fatal`` (an index file), else
    RowError with reason ``missing_file`` / ``malformed_json``.
    """
    where = f"{path}" + (f" (record {record})" if record else "")
    if not os.path.isfile(path):
        if fatal:
            raise DataPrepError(f"missing file: {where}")
        raise RowError("missing_file", f"missing file: {where}")
    with open(path, "rb") as f:
        raw = f.read()
    last: Exception | None = None
    for enc in encodings:
        try:
            return json.loads(raw.decode(enc))
        except UnicodeDecodeError as e:
            last = e
        except json.JSONDecodeError as e:
            msg = f"malformed JSON in {where}: {e.msg} (line {e.lineno}, column {e.colno})"  # e.msg may end in "at"
            if fatal:
                raise DataPrepError(msg) from None
            raise RowError("malformed_json", msg) from None
    msg = f"cannot decode {where} as {'/'.join(encodings)}: {last}"
    if fatal:
        raise DataPrepError(msg)
    raise RowError("malformed_json", msg)


def open_image(source: str | bytes, record: str, *, draft_to: int | None = FRAME) -> Image.Image:
    """Open an image file (or encoded bytes) fully decoded as RGB.

    ``draft_to``: for big JPEGs let the decoder downscale by 2/4/8 while staying >= this size
    in both dimensions (exact original size is still reported by :func:`image_size`).
    RowError ``missing_file`` / ``unreadable_image`` names the file and the record.
    """
    where = "<bytes>" if isinstance(source, (bytes, bytearray)) else source
    if not isinstance(source, (bytes, bytearray)) and not os.path.isfile(source):
        raise RowError("missing_file", f"missing image file: {where} (record {record})")
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        original = img.size  # before any draft reduction
        if draft_to and img.format == "JPEG" and min(img.size) >= 2 * draft_to:
            img.draft("RGB", (draft_to, draft_to))
        img.load()
        img = _to_rgb(img) if img.mode != "RGB" else img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise RowError("unreadable_image", f"unreadable image {where} (record {record}): {e}") from None
    img.original_size = original
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    return img.convert("RGB")


def image_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of the original image (before any JPEG draft reduction)."""
    return getattr(img, "original_size", img.size)


def resize_to_frame(img: Image.Image, size: int = FRAME) -> Image.Image:
    """Resize to size x size (bilinear with antialiasing, as docs/METHOD.md §5)."""
    if img.size == (size, size):
        return img
    return img.resize((size, size), Image.Resampling.BILINEAR)


def encode_image(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    return buf.getvalue()


def frame_image_bytes(img: Image.Image, fmt: str) -> bytes:
    """The image as stored in the parquet: resized to FRAME x FRAME and encoded."""
    return encode_image(resize_to_frame(img), fmt)


# ---------------------------------------------------------------------------------------------
# 840-frame geometry and labels
# ---------------------------------------------------------------------------------------------
def to_frame(v: float, extent: int) -> int:
    """One coordinate from an image of size ``extent`` into the FRAME frame:
    ``int(v * FRAME / extent + 0.5)``, clamped to the pixel range [0, FRAME - 1]."""
    return min(FRAME - 1, max(0, int(v * FRAME / extent + 0.5)))


def box_to_frame(box: Sequence[float], w: int, h: int) -> list[int]:
    x1, y1, x2, y2 = box
    return [to_frame(x1, w), to_frame(y1, h), to_frame(x2, w), to_frame(y2, h)]


def point_to_frame(pt: Sequence[float], w: int, h: int) -> list[int]:
    return [to_frame(pt[0], w), to_frame(pt[1], h)]


def make_object(box_xyxy: Sequence[float], point_xy: Sequence[float], w: int, h: int) -> dict:
    """A label object in the FRAME frame from a box and point in original pixels.

    Scaling is monotone, so a point inside its box stays inside after rounding.
    """
    return {BBOX_KEY: box_to_frame(box_xyxy, w, h), POINT_KEY: point_to_frame(point_xy, w, h)}


def check_inside(coords: np.ndarray | Sequence[float], w: int, h: int, record: str, what: str,
                 tol: float = 1.0) -> None:
    """RowError ``coords_outside_image`` if any (x, y) lies beyond the image by more than ``tol``
    pixels (COCO polygons overshoot the border by a fraction of a pixel routinely)."""
    a = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if a.size == 0:
        return
    if not np.all(np.isfinite(a)):
        raise RowError("coords_outside_image", f"{what} of record {record} has non-finite coordinates")
    bad = (a[:, 0] < -tol) | (a[:, 0] > w + tol) | (a[:, 1] < -tol) | (a[:, 1] > h + tol)
    if bad.any():
        x, y = a[np.argmax(bad)]
        raise RowError(
            "coords_outside_image",
            f"{what} of record {record}: coordinate ({x:g}, {y:g}) outside the {w}x{h} image",
        )


def mask_box_point(mask: np.ndarray) -> tuple[list[int], list[int]] | None:
    """Box (mask extent, inclusive pixel indices x1, y1, x2, y2) and the most interior pixel
    (maximum of the Euclidean distance transform, ties -> first in row-major order) of a
    boolean mask, in original pixels. None for an empty mask. The point is always a mask pixel."""
    from scipy.ndimage import distance_transform_edt

    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    y1, y2, x1, x2 = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    crop = np.pad(mask[y1 : y2 + 1, x1 : x2 + 1], 1)  # zero border: the image edge is a boundary
    dist = distance_transform_edt(crop)
    py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [x1, y1, x2, y2], [int(px) - 1 + x1, int(py) - 1 + y1]


def mask_object(mask: np.ndarray) -> dict | None:
    """Label object (FRAME frame) of one boolean mask of shape (H, W); None when empty."""
    bp = mask_box_point(mask)
    if bp is None:
        return None
    h, w = mask.shape
    return make_object(bp[0], bp[1], w, h)


def mask_components(mask: np.ndarray, max_objects: int = MAX_OBJECTS) -> list[np.ndarray]:
    """8-connected components of a boolean mask, largest ``max_objects`` kept, returned in
    reading order (top-left first) so the label order is deterministic."""
    from scipy.ndimage import find_objects, label

    lab, n = label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.argsort(-sizes, kind="stable")[:max_objects] + 1
    slices = find_objects(lab)
    keep = sorted(keep, key=lambda i: (slices[i - 1][0].start, slices[i - 1][1].start, i))
    return [lab == i for i in keep]


def labels_json(objects: list[dict]) -> str:
    """The ground-truth string: compact JSON list (``"[]"`` for a non-object sample)."""
    return json.dumps(objects)


def normalize_question(text: str) -> str:
    """Referring text as the public Seg-Zero/ViSurf prompt uses it: stripped, lowercased,
    trailing/leading ``. ! ? "`` removed."""
    return " ".join(str(text).split()).strip().strip('.!?"').strip().lower()


# ---------------------------------------------------------------------------------------------
# Row schema (verl RLHFDataset multimodal layout)
# ---------------------------------------------------------------------------------------------
EXTRA_INFO_TYPE = pa.struct(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("index", pa.int64()),
        ("task", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("non_object", pa.bool_()),
        ("num_objects", pa.int64()),
        ("question", pa.string()),
        ("choices", pa.list_(pa.string())),
        # MathVista testmini.json fields (null for other sources), read by --math-protocol mathvista
        ("question_type", pa.string()),
        ("answer_type", pa.string()),
        ("precision", pa.float64()),
    ]
)

ROW_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", EXTRA_INFO_TYPE),
    ]
)


def row_schema(coords: str = DEFAULT_COORDS) -> pa.Schema:
    """The output schema: ``ROW_SCHEMA``, plus ``extra_info.coords`` (string) for a coordinate convention
    other than the default ``abs840`` (so the paper's files stay exactly as they were)."""
    if coords == DEFAULT_COORDS:
        return ROW_SCHEMA
    extra = pa.struct([*EXTRA_INFO_TYPE, (COORDS_KEY, pa.string())])
    return ROW_SCHEMA.set(ROW_SCHEMA.get_field_index("extra_info"), pa.field("extra_info", extra))


def build_row(
    *,
    data_source: str,
    question: str,
    image_bytes: bytes,
    ground_truth: str,
    row_id: str,
    split: str,
    width: int,
    height: int,
    choices: Sequence[str] | None = None,
    style: str = DEFAULT_PROMPT_STYLE,
    question_type: str | None = None,
    answer_type: str | None = None,
    precision: float | None = None,
) -> dict:
    """One output row. ``ground_truth`` is the label string (constants docstring); for spatial
    tasks the JSON list, whose length gives ``num_objects`` and ``non_object``. ``index`` is
    filled in by the writer loop (position in the output file). The prompt is
    ``build_prompt(task, question, style)`` (see :func:`apply_prompt_style`).
    ``question_type`` / ``answer_type`` / ``precision``: MathVista's per-record scoring fields
    (None elsewhere; ``precision`` a float so the column has one type)."""
    for what, v in (("width", width), ("height", height)):
        if not _positive_whole(v):
            raise RowError("malformed_size", f"row {row_id}: image {what} {v!r} is not a whole number > 0")
    task = task_of(data_source)
    if task == "math":
        n_obj, non_object = 0, False
    else:
        n_obj = len(json.loads(ground_truth))
        non_object = n_obj == 0
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": build_prompt(task, question, style)}],
        "images": [{"bytes": image_bytes}],
        "ability": TASK_ABILITY[task],
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {
            "id": str(row_id),
            "split": split,
            "index": -1,
            "task": task,
            "width": int(width),
            "height": int(height),
            "non_object": non_object,
            "num_objects": n_obj,
            "question": question,
            "choices": list(choices) if choices is not None else None,
            "question_type": question_type,
            "answer_type": answer_type,
            "precision": None if precision is None else float(precision),
        },
    }


def _positive_whole(v) -> bool:
    """An image dimension: a whole number > 0 (an int, or a float / numpy value with no fraction)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(v)) and float(v) == int(v) and v > 0


def apply_prompt_style(row: dict, style: str, coords: str = DEFAULT_COORDS) -> dict:
    """``row`` with its prompt rebuilt in prompt style ``style`` and coordinate convention ``coords``
    (``verl_ext.coords``) from ``extra_info`` (task, question), i.e. exactly what :func:`build_row` would
    have written with them. A convention other than the default ``abs840`` is declared in
    ``extra_info["coords"]`` (the recipe's start-up check compares it with the run's); labels are not
    touched (always the 840 frame). Rows whose prompt is not a task template (synthetic grid rows) keep it
    and get the convention's sentence appended."""
    ei = row["extra_info"]
    if style != DEFAULT_PROMPT_STYLE:
        row["prompt"] = [{"role": "user", "content": build_prompt(ei["task"], ei["question"], style, coords)}]
    elif coords != DEFAULT_COORDS and ei.get("task") != "math":  # build_prompt's hint, after the row's prompt
        row["prompt"] = [{**row["prompt"][0], "content": row["prompt"][0]["content"] + prompt_hint(coords)}]
    if coords != DEFAULT_COORDS:
        ei[COORDS_KEY] = coords
    return row


def check_prompt_style(style: str, data_source: str) -> None:
    """DataPrepError when prompt style ``style`` is unknown or has no template for the task
    of ``data_source`` (checked before any record is read)."""
    try:
        ps = prompt_style(style)
    except ValueError as e:
        raise DataPrepError(str(e)) from None
    task = task_of(data_source)
    if task not in ps.templates:
        raise DataPrepError(
            f"prompt style {style!r} has no template for {data_source} (task {task}); "
            f"it covers {', '.join(ps.templates)}"
        )


# ---------------------------------------------------------------------------------------------
# Atomic streaming parquet writer
# ---------------------------------------------------------------------------------------------
class AtomicParquetWriter:
    """Stream rows into ``path`` atomically (``verl_ext.atomic_io.AtomicFile``).

    The destination is checked first: a directory, a parent that is a file or an unwritable place
    raises a one-line :class:`DataPrepError` before any row is converted. Rows go to a hidden temp
    file in the same directory in row groups of at most ``row_group_rows`` rows /
    ``row_group_bytes`` bytes of images; :meth:`commit` (or leaving the ``with`` block normally)
    closes it and ``os.replace``-s it onto ``path``, with the mode ``open(path, "w")`` would give
    (the umask's for a new file). Leaving the block with an exception (including KeyboardInterrupt /
    SIGTERM via :func:`run_cli`), or a failed commit, closes and deletes the temp file, so a failed
    or interrupted run never leaves ``path`` half-written (an existing ``path`` is untouched) nor a
    temp file. Only SIGKILL can leave the hidden temp file behind.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema = ROW_SCHEMA,
                 row_group_rows: int = ROW_GROUP_ROWS, row_group_bytes: int = ROW_GROUP_BYTES):
        try:
            self._file = AtomicFile(path)
        except DestinationError as e:
            raise DataPrepError(f"--out: {e}") from None
        self.path = str(self._file.path)
        self.tmp_path = str(self._file.tmp_path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.rows_written = 0
        self._buf: list[dict] = []
        self._buf_bytes = 0
        self._done = False
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp_path, schema, compression="zstd")
        except BaseException:
            self._file.abort()
            raise

    def write(self, row: dict) -> None:
        self._buf.append(row)
        self._buf_bytes += sum(len(im["bytes"]) for im in row.get("images") or [])
        self.rows_written += 1
        if len(self._buf) >= self.row_group_rows or self._buf_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.schema))
            self._buf, self._buf_bytes = [], 0

    def commit(self) -> str:
        try:
            self._flush()
            self._writer.close()
            self._writer = None
            self._file.commit()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = []
        with contextlib.suppress(Exception):  # best effort while unwinding
            if self._writer is not None:
                self._writer.close()
        self._writer = None
        self._file.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------
# Ordered, bounded process pool
# ---------------------------------------------------------------------------------------------
def _call(fn_args):
    fn, opts, record = fn_args
    try:
        return True, fn(record, opts)
    except RowError as e:
        return False, e
    except Exception as e:  # noqa: BLE001 - an unexpected bug is reported with its record
        return False, RowError("error", f"{type(e).__name__}: {e} (record {record_name(record)})")


def record_name(record: Any) -> str:
    if isinstance(record, dict):
        for k in ("name", "id", "path"):
            if k in record:
                return str(record[k])
    return repr(record)[:200]


def ordered_map(fn: Callable, opts: Any, records: Iterable, workers: int, window: int | None = None) -> Iterator:
    """Yield ``(ok, rows_or_RowError)`` for each record, in input order.

    ``workers <= 1`` runs in-process. Otherwise ``workers`` processes fed through queues; at
    most ``window`` records are in flight (``Pool.imap`` would drain the whole input iterator).
    On any exit other than exhaustion (error, Ctrl-C, SIGTERM, ``close()``) the workers are
    SIGKILLed and reaped, so nothing hangs (``Pool.terminate`` can deadlock when interrupted).
    """
    if workers <= 1:
        for rec in records:
            yield _call((fn, opts, rec))
        return
    import queue as queue_mod

    window = window or workers * 4
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    inq, outq = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker_loop, args=(fn, opts, inq, outq), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    finished = False
    try:
        it = iter(records)
        sent = got = 0
        exhausted = False
        done: dict[int, Any] = {}
        while True:
            while not exhausted and sent - got < window:
                try:
                    rec = next(it)
                except StopIteration:
                    exhausted = True
                    break
                inq.put((sent, rec))
                sent += 1
            if exhausted and got == sent:
                break
            while got not in done:
                try:
                    seq, res = outq.get(timeout=1.0)
                except queue_mod.Empty:
                    dead = [p for p in procs if not p.is_alive()]
                    if dead:
                        raise DataPrepError(
                            f"a worker process died (exit code {dead[0].exitcode}) while converting records "
                            f"{got}..{sent - 1}; out of memory? try fewer --workers"
                        ) from None
                    continue
                done[seq] = res
            yield done.pop(got)
            got += 1
        for _ in procs:
            inq.put(None)
        for p in procs:
            p.join(timeout=30)
        finished = True
    finally:
        for p in procs:
            if p.is_alive() and not finished:
                p.kill()
        for p in procs:
            p.join(timeout=30)
        for q in (inq, outq):
            q.cancel_join_thread()
            q.close()


def _worker_loop(fn, opts, inq, outq) -> None:
    # the parent handles Ctrl-C / SIGTERM and kills the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import queue as queue_mod

    parent = os.getppid()
    while True:
        try:
            item = inq.get(timeout=1.0)
        except queue_mod.Empty:
            if os.getppid() != parent:  # the parent was SIGKILLed: do not linger as an orphan
                return
            continue
        if item is None:
            return
        seq, rec = item
        outq.put((seq, _call((fn, opts, rec))))


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
@dataclass
class Summary:
    data_source: str
    out: str = ""
    rows: int = 0
    records: int = 0
    non_object: int = 0
    objects: int = 0
    max_objects: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    first_error: dict = field(default_factory=dict)
    seconds: float = 0.0
    bytes: int = 0

    def add(self, row: dict) -> None:
        self.rows += 1
        ei = row["extra_info"]
        self.non_object += bool(ei["non_object"])
        self.objects += ei["num_objects"]
        self.max_objects = max(self.max_objects, ei["num_objects"])

    def table(self) -> str:
        task = DATA_SOURCE_TASK.get(self.data_source, "?")
        lines = [
            ("output", self.out or "(none)"),
            ("data_source / task", f"{self.data_source} / {task}"),
            ("source records read", f"{self.records}"),
            ("rows written", f"{self.rows}"),
        ]
        if task != "math":
            share = self.non_object / self.rows if self.rows else 0.0
            per = self.objects / self.rows if self.rows else 0.0
            lines += [
                ("non-object rows", f"{self.non_object} ({share:.1%})"),
                ("objects per row", f"{per:.2f} mean, {self.max_objects} max"),
            ]
        total_skipped = sum(self.skipped.values())
        lines.append(("rows skipped", f"{total_skipped}"))
        for reason, n in sorted(self.skipped.items()):
            lines.append((f"  skipped: {reason}", f"{n}   e.g. {self.first_error[reason]}"))
        rate = self.records / self.seconds if self.seconds else 0.0
        lines += [
            ("file size", f"{self.bytes / 2**20:.1f} MiB"),
            ("time", f"{self.seconds:.1f} s ({rate:.1f} records/s)"),
        ]
        width = max(len(k) for k, _ in lines)
        bar = "-" * (width + 2 + max(len(v) for _, v in lines[:4]))
        return "\n".join([bar] + [f"{k.ljust(width)}  {v}" for k, v in lines] + [bar])


# ---------------------------------------------------------------------------------------------
# CLI driver
# ---------------------------------------------------------------------------------------------
def make_parser(prog: str, description: str, example: str, default_format: str = "jpeg") -> argparse.ArgumentParser:
    """An argparse parser with the common flags; the source module adds its own."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output parquet file (written atomically)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="convert at most N source records")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes (output order and content do not depend on N; default 1)")
    p.add_argument("--image-format", choices=("png", "jpeg"), default=default_format,
                   help=f"encoding of the 840x840 images (default {default_format}; jpeg quality {JPEG_QUALITY})")
    p.add_argument("--strict", action="store_true",
                   help="abort on the first bad record (default: skip it and report it in the summary)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--prompt-style", choices=tuple(PROMPT_STYLES), default=DEFAULT_PROMPT_STYLE,
                   help=f"prompt templates (verl_ext/constants.py PROMPT_STYLES; default {DEFAULT_PROMPT_STYLE}; "
                        "visionreasoner = the public VisionReasoner/ViSurf DETECTION_TEMPLATE / MATH_TEMPLATE)")
    p.add_argument("--coords", choices=COORDS, default=DEFAULT_COORDS,
                   help=f"coordinate convention the prompts ask for (verl_ext/coords.py; default {DEFAULT_COORDS}, "
                        "the paper's Qwen2.5-VL absolute 840-frame pixels; rel1000 = Qwen3-VL / Qwen3.5, relative "
                        "0-1000, declared in extra_info.coords). Labels are always written in the 840 frame")
    return p


def _limited(it: Iterable, limit: int | None, summary: Summary) -> Iterator:
    for i, rec in enumerate(it):
        if limit is not None and i >= limit:
            return
        summary.records += 1
        yield rec


class _Terminated(BaseException):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


def convert_all(
    *,
    data_source: str,
    records: Iterable,
    convert: Callable[[Any, Any], list[dict]],
    opts: Any,
    out: str,
    workers: int = 1,
    limit: int | None = None,
    strict: bool = False,
    progress: bool = True,
    row_group_rows: int | None = None,
    prompt_style: str = DEFAULT_PROMPT_STYLE,
    coords: str = DEFAULT_COORDS,
) -> Summary:
    """Convert ``records`` with ``convert`` into ``out``; returns the :class:`Summary`.
    Prompts are written in ``prompt_style`` for the coordinate convention ``coords``
    (:func:`apply_prompt_style`).

    Raises RowError (``strict``) or DataPrepError; in both cases (and on interruption) no
    output file is written. Also raises DataPrepError when no row at all was produced.
    """
    from tqdm import tqdm

    check_prompt_style(prompt_style, data_source)
    summary = Summary(data_source=data_source)
    t0 = time.perf_counter()
    warned: collections.Counter = collections.Counter()
    first_row: dict[str, int] = {}  # row id -> its index in the output (ids are unique in one file)
    it = ordered_map(convert, opts, _limited(records, limit, summary), workers)
    try:
        with AtomicParquetWriter(out, schema=row_schema(coords), row_group_rows=row_group_rows or ROW_GROUP_ROWS) \
                as writer, tqdm(
            total=limit, unit="rec", disable=not progress, desc=data_source, file=sys.stderr, leave=False
        ) as bar:
            for ok, result in it:
                bar.update(1)
                if ok:
                    result = _unique_ids(result, first_row)
                    ok = not isinstance(result, RowError)
                if not ok:
                    if strict:
                        raise result
                    summary.skipped[result.reason] += 1
                    summary.first_error.setdefault(result.reason, result.message)
                    if warned[result.reason] < 5:
                        logger.warning("skipped: %s", result.message)
                    warned[result.reason] += 1
                    continue
                for row in result:
                    first_row[row["extra_info"]["id"]] = writer.rows_written
                    apply_prompt_style(row, prompt_style, coords)
                    row["extra_info"]["index"] = writer.rows_written
                    writer.write(row)
                    summary.add(row)
            if summary.rows == 0:
                raise DataPrepError(
                    f"no rows produced for {out} ({summary.records} records read, "
                    f"{sum(summary.skipped.values())} skipped)"
                    + (f"; first problem: {next(iter(summary.first_error.values()))}" if summary.first_error else "")
                )
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    summary.out = os.path.abspath(out)
    summary.seconds = time.perf_counter() - t0
    summary.bytes = os.path.getsize(out)
    return summary


def _unique_ids(rows: list[dict], first_row: dict[str, int]) -> list[dict] | RowError:
    """``rows`` (one record's), or a ``duplicate_id`` RowError when one repeats the id of a row
    already written (``first_row``: id -> output index) or of another row of the record."""
    ids = [r["extra_info"]["id"] for r in rows]
    for k, rid in enumerate(ids):
        if rid in first_row:
            return RowError("duplicate_id", f"row id {rid!r} repeats the id of output row {first_row[rid]}; "
                                            "ids are unique in one file (the repeat is skipped)")
        if rid in ids[:k]:
            return RowError("duplicate_id", f"row id {rid!r} appears twice among the rows of one record")
    return rows


def run_cli(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    data_source: str | Callable[[argparse.Namespace], str],
    records: Callable[[argparse.Namespace], Iterable],
    convert: Callable[[Any, Any], list[dict]],
    options: Callable[[argparse.Namespace], Any],
) -> int:
    """Parse args, convert, print the summary. Exit code 0 on success, 1 on a fatal error
    (message on stderr names the file/record), 130 when interrupted."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    ds = data_source(args) if callable(data_source) else data_source
    old = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        summary = convert_all(
            data_source=ds,
            records=records(args),
            convert=convert,
            opts=options(args),
            out=args.out,
            workers=args.workers,
            limit=args.limit,
            strict=args.strict,
            progress=not args.quiet,
            prompt_style=getattr(args, "prompt_style", DEFAULT_PROMPT_STYLE),
            coords=getattr(args, "coords", DEFAULT_COORDS),
        )
    except RowError as e:
        print(f"error ({e.reason}): {e.message}\n(--strict: aborted, no output written)", file=sys.stderr)
        return 1
    except DataPrepError as e:
        print(f"error: {e}\n(no output written)", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Terminated):
        print("interrupted: no output written", file=sys.stderr)
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    print(summary.table())
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()



# ---------------------------------------------------------------------------------------------
# HF-hub style parquet inputs (MathVista, Geometry3K, the ViSurf mix)
# ---------------------------------------------------------------------------------------------
def iter_parquet_rows(path: str, columns: Sequence[str] | None = None, batch_size: int = 16) -> Iterator[dict]:
    """Stream rows of a parquet file as dicts, ``batch_size`` at a time (bounded memory).
    DataPrepError naming the file when it is missing, unreadable or lacks a column."""
    require_file(path, "parquet file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataPrepError(f"unreadable parquet file {path}: {e}") from None
    names = set(pf.schema_arrow.names)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataPrepError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(sorted(names))})")
    for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
        yield from batch.to_pylist()


def hf_image_source(value: Any, base_dir: str, record: str) -> str | bytes:
    """Encoded bytes (or a file path) of an HF ``Image`` value: ``{"bytes", "path"}``, raw
    bytes, or a path string (relative paths resolved against ``base_dir``)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    if isinstance(value, str) and value:
        return value if os.path.isabs(value) else os.path.join(base_dir, value)
    raise RowError("missing_image", f"record {record} has no image (neither bytes nor path)")
