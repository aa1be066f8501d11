"""Geometry3K (hiyouga/geometry3k HF parquet) -> verl parquet (data_source ``geo3k``).

Columns: ``images`` (list of HF images; exactly one is used) or ``image``, ``problem``
(leading ``<image>`` removed: the prompt template places the image), ``answer``, optional
``choices`` / ``ground_truth`` (letter) / ``id``. Label: the option letter when choices exist
(from ``ground_truth`` or the position of ``answer``), else the answer string.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from data_prep.common import (
    DataPrepError,
    RowError,
    build_row,
    frame_image_bytes,
    hf_image_source,
    image_size,
    iter_parquet_rows,
    make_parser,
    open_image,
    run_cli,
)
from data_prep.mathvista import build_query, choice_letter


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str


def records(args):
    for path in args.hf_parquet:
        base = os.path.dirname(os.path.abspath(path))
        for i, r in enumerate(iter_parquet_rows(path)):
            if i == 0:
                missing = [c for c in ("problem", "answer") if c not in r] + ([] if ("images" in r or "image" in r) else ["images"])
                if missing:
                    raise DataPrepError(f"{path}: missing column(s) {', '.join(missing)}")
            rid = str(r.get("id", i))
            name = f"row {i} (id {rid}) in {path}"
            imgs = r.get("images") if "images" in r else [r.get("image")]
            rec = {"name": name, "id": rid, "problem": r.get("problem") or "", "answer": r.get("answer"),
                   "choices": r.get("choices"), "letter": r.get("ground_truth")}
            try:
                if not imgs or len(imgs) != 1:
                    raise RowError("image_count", f"{name}: expected exactly one image, found {len(imgs or [])}")
                rec["image"] = hf_image_source(imgs[0], base, name)
            except RowError as e:
                rec["error"] = (e.reason, e.message)
            yield rec


def convert(rec: dict, opts: Opts) -> list[dict]:
    if "error" in rec:
        raise RowError(*rec["error"])
    name = rec["name"]
    problem = re.sub(r"\s*<image>\s*", " ", rec["problem"]).strip()
    if not problem:
        raise RowError("no_question", f"{name}: empty problem")
    answer = "" if rec["answer"] is None else str(rec["answer"]).strip()
    choices = [str(c) for c in rec["choices"]] if rec.get("choices") else None
    letter = str(rec.get("letter") or "").strip().upper()
    if choices:
        label = letter if len(letter) == 1 and 0 <= ord(letter) - 65 < len(choices) else choice_letter(answer, choices, name)
    elif answer:
        label = answer
    else:
        raise RowError("no_answer", f"{name}: empty answer")
    img = open_image(rec["image"], name)
    w, h = image_size(img)
    return [build_row(data_source="geo3k", question=build_query(problem, choices), image_bytes=frame_image_bytes(img, opts.image_format),
                      ground_truth=label, row_id=rec["id"], split=opts.split, width=w, height=h, choices=choices)]


def parser():
    p = make_parser(
        "python -m data_prep.geo3k", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.geo3k --hf-parquet geometry3k/data/train-00000-of-00001.parquet --split train --out data/geo3k_train.parquet",
        default_format="png",
    )
    p.add_argument("--hf-parquet", nargs="+", required=True, metavar="FILE", help="parquet file(s) of hiyouga/geometry3k")
    p.add_argument("--split", required=True, choices=("train", "validation", "test"))
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "geo3k", records, convert, lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
