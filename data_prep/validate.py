"""Validate a data-prep parquet: schema/label checks on every row, then a load through verl's
own ``RLHFDataset`` with a tokenizer + processor (the tiny Qwen2.5-VL one by default).

    python -m data_prep.validate FILE.parquet [FILE ...] [--processor DIR] [--no-verl]

Row checks: ``data_source`` known and ``ability`` matching its task; ``prompt`` a list of chat
messages whose ``<image>`` count equals the number of images; every image decodes and is
square (840x840 for real sources; synthetic rows may use a smaller ``--image-size``);
``reward_model.style == "rule"``; the label parses (grounding/anomaly/lesion: JSON list of
``bbox_2d`` 4 ints + ``point_2d`` 2 ints inside [0, 839], x1 <= x2, y1 <= y2, point inside its
box; gui: exactly one object; math: non-empty, a valid letter when ``extra_info.choices``
exists); ``extra_info`` non_object / num_objects consistent with the label, indexes unique.

verl check: ``RLHFDataset`` loads the file (its prompt-length filter silently drops rows it
cannot process, so the row count must stay the same), and for every item the raw chat
messages are built and the processor turns them into model inputs.
Exit code 0 when everything passes, 1 otherwise (problems printed with row index and id).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from verl_ext.constants import (
    BBOX_KEY,
    DATA_SOURCE_TASK,
    FRAME,
    POINT_KEY,
    TASK_ABILITY,
)

SPATIAL = ("grounding", "anomaly", "lesion", "gui")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_label(task: str, gt, choices=None) -> list[str]:
    """Problems with one ground-truth string for ``task`` (empty list = valid)."""
    if not isinstance(gt, str):
        return [f"ground_truth is {type(gt).__name__}, not a string"]
    if task == "math":
        if not gt.strip():
            return ["empty math answer"]
        if choices and (not re.fullmatch(r"[A-Z]", gt) or ord(gt) - 65 >= len(choices)):
            return [f"multiple-choice label {gt!r} is not a letter among {len(choices)} choices"]
        return []
    try:
        objs = json.loads(gt)
    except json.JSONDecodeError as e:
        return [f"label is not JSON ({e.msg}): {gt[:80]!r}"]
    if not isinstance(objs, list):
        return [f"label is not a JSON list: {gt[:80]!r}"]
    problems = []
    if task == "gui" and len(objs) != 1:
        problems.append(f"gui label must have exactly one object, has {len(objs)}")
    for i, o in enumerate(objs):
        if not isinstance(o, dict):
            problems.append(f"object {i} is not an object: {o!r}")
            continue
        box, pt = o.get(BBOX_KEY), o.get(POINT_KEY)
        if not (isinstance(box, list) and len(box) == 4 and all(map(_is_int, box))):
            problems.append(f"object {i}: {BBOX_KEY} {box!r} is not 4 integers")
            continue
        if not (isinstance(pt, list) and len(pt) == 2 and all(map(_is_int, pt))):
            problems.append(f"object {i}: {POINT_KEY} {pt!r} is not 2 integers")
            continue
        if min(box + pt) < 0 or max(box + pt) > FRAME - 1:
            problems.append(f"object {i}: coordinates {box} / {pt} outside the {FRAME} frame [0, {FRAME - 1}]")
        if box[0] > box[2] or box[1] > box[3]:
            problems.append(f"object {i}: box {box} has x1 > x2 or y1 > y2")
        if not (box[0] <= pt[0] <= box[2] and box[1] <= pt[1] <= box[3]):
            problems.append(f"object {i}: point {pt} outside its box {box}")
    return problems


def check_row(row: dict) -> list[str]:
    """Problems with one output row (as read back from the parquet)."""
    problems: list[str] = []
    ds = row.get("data_source")
    task = DATA_SOURCE_TASK.get(ds)
    if task is None:
        return [f"unknown data_source {ds!r}"]
    if row.get("ability") != TASK_ABILITY[task]:
        problems.append(f"ability {row.get('ability')!r} != {TASK_ABILITY[task]!r} for task {task}")
    prompt = row.get("prompt")
    images = row.get("images") or []
    if not isinstance(prompt, list) or not prompt or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant")
        for m in prompt
    ):
        problems.append("prompt is not a non-empty list of {role, content} chat messages")
    else:
        n_tags = sum(m["content"].count("<image>") for m in prompt)
        if n_tags != len(images):
            problems.append(f"{n_tags} <image> placeholders but {len(images)} images")
    if not images:
        problems.append("no images")
    for i, im in enumerate(images):
        data = im.get("bytes") if isinstance(im, dict) else None
        if not data:
            problems.append(f"image {i} has no bytes")
            continue
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                size = img.size
        except Exception as e:  # noqa: BLE001 - any decode failure is a problem to report
            problems.append(f"image {i} does not decode: {e}")
            continue
        synthetic = str(ds).startswith("synthetic")
        if size[0] != size[1] or (not synthetic and size != (FRAME, FRAME)):
            problems.append(f"image {i} is {size[0]}x{size[1]}, expected {FRAME}x{FRAME}")
    rm = row.get("reward_model") or {}
    if rm.get("style") != "rule":
        problems.append(f"reward_model.style is {rm.get('style')!r}, not 'rule'")
    ei = row.get("extra_info") or {}
    problems += check_label(task, rm.get("ground_truth"), ei.get("choices"))
    if ei.get("task") != task:
        problems.append(f"extra_info.task {ei.get('task')!r} != {task!r}")
    if task in SPATIAL and not any("label" in p or "object" in p for p in problems):
        try:
            n = len(json.loads(rm.get("ground_truth")))
            if ei.get("num_objects") != n or bool(ei.get("non_object")) != (n == 0):
                problems.append(f"extra_info non_object/num_objects disagree with the label ({n} objects)")
        except (TypeError, json.JSONDecodeError):
            pass
    return problems


def row_count(path: str) -> int:
    """Rows of the parquet file ``path`` from its footer; 0 when it is missing or unreadable."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0


def iter_rows(path: str, batch_size: int = 64) -> Iterator[dict]:
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def check_rows(rows: Iterable[dict]) -> tuple[int, list[str]]:
    """(number of rows, problems 'row I (id X): ...') over an iterable of rows."""
    problems, seen, n = [], set(), 0
    for i, row in enumerate(rows):
        n += 1
        ei = row.get("extra_info") or {}
        idx = ei.get("index")
        where = f"row {i} (id {ei.get('id')})"
        if idx in seen:
            problems.append(f"{where}: duplicate extra_info.index {idx}")
        seen.add(idx)
        problems += [f"{where}: {p}" for p in check_row(row)]
    return n, problems


def default_processor_dir() -> str:
    """The tiny Qwen2.5-VL processor, built once into a cache directory."""
    from verl_ext.tiny import build_tiny

    d = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "visurf", "tiny-qwen25vl")
    return str(build_tiny(d))


def verl_load(path: str, processor_dir: str, max_prompt_length: int = 8192) -> tuple[int, list[str]]:
    """Load ``path`` with verl's RLHFDataset and process every item; (rows loaded, problems)."""
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = AutoTokenizer.from_pretrained(processor_dir)
    processor = AutoProcessor.from_pretrained(processor_dir)
    n_file = pq.ParquetFile(path).metadata.num_rows
    with tempfile.TemporaryDirectory() as cache:
        config = OmegaConf.create(
            {
                "cache_dir": cache,
                "prompt_key": "prompt",
                "image_key": "images",
                "max_prompt_length": max_prompt_length,
                "filter_overlong_prompts": True,
                "filter_overlong_prompts_workers": None,  # in-process: forking after torch/tokenizers can hang
                "truncation": "error",
            }
        )
        ds = RLHFDataset(data_files=[os.path.abspath(path)], tokenizer=tokenizer, config=config, processor=processor)
        problems = []
        if len(ds) != n_file:
            problems.append(
                f"RLHFDataset kept {len(ds)} of {n_file} rows (its filter drops rows it cannot process "
                f"or longer than {max_prompt_length} tokens)"
            )
        patch = ds.image_patch_size
        for i in range(len(ds)):
            try:
                item = ds[i]
                images, _, _ = RLHFDataset._process_multi_modal_info(item["raw_prompt"], patch, config)
                text = processor.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)
                inputs = processor(text=[text], images=images, return_tensors="pt")
                n_img_tokens = int((inputs["input_ids"] == processor.image_token_id).sum()) if hasattr(
                    processor, "image_token_id") else 1
                if not images or n_img_tokens == 0:
                    problems.append(f"row {i}: processor produced no image tokens")
            except Exception as e:  # noqa: BLE001 - report, keep checking the other rows
                problems.append(f"row {i}: verl/processor failed: {type(e).__name__}: {e}")
        return len(ds), problems


def validate(path: str, processor_dir: str | None = None, use_verl: bool = True) -> list[str]:
    """All problems of one file (empty list = valid)."""
    if not os.path.isfile(path):
        return [f"missing file: {path}"]
    try:
        n, problems = check_rows(iter_rows(path))
    except (pa.ArrowException, OSError) as e:  # truncated / not parquet: one FAIL line, not a traceback
        return [f"not a readable parquet file: {type(e).__name__}: {e}"]
    if n == 0:
        problems.append("the file has no rows")
    if use_verl and n:
        _, more = verl_load(path, processor_dir or default_processor_dir())
        problems += more
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.validate",
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  python -m data_prep.validate data/grefcoco_val.parquet --processor /tmp/tiny-qwen25vl\n\n"
        + "\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE.parquet")
    p.add_argument("--processor", default=None,
                   help="tokenizer+processor directory (default: the tiny Qwen2.5-VL, built by verl_ext.tiny)")
    p.add_argument("--no-verl", action="store_true", help="only the row checks (no RLHFDataset load)")
    p.add_argument("--max-problems", type=int, default=50, help="print at most this many problems per file")
    args = p.parse_args(argv)
    bad = 0
    for f in args.files:
        problems = validate(f, args.processor, use_verl=not args.no_verl)
        n = row_count(f)
        if problems:
            bad += 1
            print(f"FAIL {f}: {len(problems)} problem(s) in {n} rows")
            for pr in problems[: args.max_problems]:
                print(f"  {pr}")
        else:
            print(f"OK   {f}: {n} rows" + ("" if args.no_verl else " (loaded by verl RLHFDataset)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
