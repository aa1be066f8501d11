"""MathVista -> verl parquet (data_source ``mathvista``).

Two inputs: a checkout of MathVista's GitHub repo (``--root DIR`` with ``data/<split>.json``
dict pid -> record, optional ``data/query.json``, and the images unzipped into ``data/images/``
as MathVista's README says; ``record["image"]`` = ``"images/1.jpg"`` is resolved against
``data/`` like evaluation/generate_response.py, falling back to ``DIR/images/``) or the HF parquet
(``--hf-parquet FILE...`` with columns pid, question, decoded_image, choices, answer,
question_type, query, answer_type, precision). The question is MathVista's ``query`` (hint +
question + choices; built from question and choices when absent). Label: the answer string;
multiple choice: the option letter, with the option texts in ``extra_info.choices``.

Each row also carries the record's ``question_type``, ``answer_type`` and ``precision`` in
``extra_info`` (``precision`` as a float, null when the record has none), the fields MathVista's
evaluation/calculate_score.py ``normalize_extracted_answer`` scores with; the evaluation's
``--math-protocol mathvista`` reads them (and infers them from the label only when absent).
"""

from __future__ import annotations

import os
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
    read_json,
    run_cli,
)
from verl_ext.rewards.labels import is_missing


@dataclass(frozen=True)
class Opts:
    image_format: str
    split: str
    data_source: str = "mathvista"


def choice_letter(answer: str, choices: list[str], record: str) -> str:
    """Letter of ``answer`` among ``choices`` (exact, then whitespace/case-insensitive)."""
    for i, c in enumerate(choices):
        if str(c) == answer:
            return chr(65 + i)
    norm = answer.strip().lower()
    for i, c in enumerate(choices):
        if str(c).strip().lower() == norm:
            return chr(65 + i)
    if len(norm) == 1 and "a" <= norm < chr(97 + len(choices)):  # already a letter
        return norm.upper()
    raise RowError("answer_not_in_choices", f"record {record}: answer {answer!r} is not one of the choices {choices}")


def build_query(question: str, choices: list[str] | None) -> str:
    q = question.strip()
    if choices:
        q += "\nChoices:\n" + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))
    return q


def math_label(rec: dict) -> tuple[str, list[str] | None]:
    answer = rec.get("answer")
    if is_missing(answer):  # None, NaN (a float column's "none": it would become the label "nan"), blank
        raise RowError("no_answer", f"record {rec['name']}: no answer (MathVista test answers are hidden)")
    answer = str(answer).strip()
    choices = rec.get("choices")
    choices = [str(c) for c in choices] if choices else None
    if rec.get("question_type", "multi_choice" if choices else "free_form") == "multi_choice" and choices:
        return choice_letter(answer, choices, rec["name"]), choices
    return answer, None


def scoring_fields(rec: dict, choices: list[str] | None) -> dict:
    """MathVista's per-record scoring fields as written to ``extra_info``: ``question_type`` and
    ``answer_type`` (strings or None) and ``precision`` (decimals of a float answer, written as a
    float; None when the record has none, including a NaN from a float parquet column). RowError
    for a precision that is not a whole number >= 0, or a multi_choice record without choices."""
    qtype, atype, precision = rec.get("question_type"), rec.get("answer_type"), rec.get("precision")
    if qtype == "multi_choice" and not choices:
        raise RowError("no_choices", f"record {rec['name']}: question_type multi_choice but no choices")
    if precision is not None and precision == precision:  # NaN != NaN: an HF float64 column's "none"
        try:
            p = float(precision)
        except (TypeError, ValueError):
            p = None
        if p is None or p < 0 or not p.is_integer():
            raise RowError("bad_precision", f"record {rec['name']}: precision {precision!r} is not a whole number >= 0")
        precision = p
    else:
        precision = None
    return {"question_type": None if qtype is None else str(qtype),
            "answer_type": None if atype is None else str(atype), "precision": precision}


def resolve_image(data_dir: str, root: str, rel: str) -> str:
    """``record["image"]`` (``"images/1.jpg"``) as a path: ``data_dir/rel`` (MathVista's layout:
    images unzipped into data/), else ``root/rel`` if that exists; the former when neither does
    (the missing-file error then names MathVista's path)."""
    official = os.path.join(data_dir, rel)
    if os.path.isfile(official):
        return official
    alt = os.path.join(root, rel)
    return alt if os.path.isfile(alt) else official


def records(args):
    if args.hf_parquet:
        cols = ("pid", "question", "decoded_image", "choices", "answer", "question_type")
        for path in args.hf_parquet:
            base = os.path.dirname(os.path.abspath(path))
            for i, r in enumerate(iter_parquet_rows(path, columns=None)):
                missing = [c for c in cols if c not in r]
                if missing:
                    raise DataPrepError(f"{path}: missing column(s) {', '.join(missing)}")
                name = f"pid {r['pid']} in {path}"
                try:
                    img = hf_image_source(r.get("decoded_image") or r.get("image"), base, name)
                except RowError as e:
                    yield {"name": name, "error": (e.reason, e.message)}
                    continue
                yield {"name": name, "id": str(r["pid"]), "image": img, "question": r["question"],
                       "query": r.get("query"), "choices": r.get("choices"), "answer": r.get("answer"),
                       "question_type": r.get("question_type"), "answer_type": r.get("answer_type"),
                       "precision": r.get("precision")}
        return
    data_dir = os.path.join(args.root, "data") if os.path.isdir(os.path.join(args.root, "data")) else args.root
    split_file = os.path.join(data_dir, f"{args.split}.json")
    recs = read_json(split_file)
    if not isinstance(recs, dict):
        raise DataPrepError(f"{split_file}: expected a dict pid -> record")
    qf = os.path.join(data_dir, "query.json")
    queries = read_json(qf) if os.path.isfile(qf) else {}
    for pid in sorted(recs, key=lambda p: (len(p), p)):
        r = recs[pid]
        name = f"pid {pid} in {split_file}"
        image = resolve_image(data_dir, args.root, r.get("image") or f"images/{pid}.jpg")
        yield {"name": name, "id": str(pid), "image": image,
               "question": r.get("question", ""), "query": r.get("query") or queries.get(pid),
               "choices": r.get("choices"), "answer": r.get("answer"), "question_type": r.get("question_type"),
               "answer_type": r.get("answer_type"), "precision": r.get("precision")}


def convert(rec: dict, opts: Opts) -> list[dict]:
    if "error" in rec:
        raise RowError(*rec["error"])
    label, choices = math_label(rec)
    fields = scoring_fields(rec, choices)
    img = open_image(rec["image"], rec["name"])
    w, h = image_size(img)
    question = (rec.get("query") or build_query(rec["question"], choices)).strip()
    return [build_row(data_source=opts.data_source, question=question, image_bytes=frame_image_bytes(img, opts.image_format),
                      ground_truth=label, row_id=rec["id"], split=opts.split, width=w, height=h, choices=choices,
                      **fields)]


def parser():
    p = make_parser(
        "python -m data_prep.mathvista", __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        "python -m data_prep.mathvista --hf-parquet testmini-00000-of-00001.parquet --split testmini "
        "--out data/mathvista_testmini.parquet\n  python -m data_prep.mathvista --root MathVista --split testmini --out data/mv.parquet",
        default_format="png",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="MathVista GitHub checkout (data/<split>.json, data/query.json, data/images/)")
    src.add_argument("--hf-parquet", nargs="+", metavar="FILE", help="HF parquet file(s) of AI4Math/MathVista")
    p.add_argument("--split", default="testmini", help="testmini (default) or test; names data/<split>.json with --root")
    return p


def main(argv=None) -> int:
    return run_cli(argv, parser(), "mathvista", records, convert, lambda a: Opts(image_format=a.image_format, split=a.split))


if __name__ == "__main__":
    sys.exit(main())
