"""Turn a ViSurf RL parquet into verl's multi-turn SFT format (the SFT / SFT->GRPO baselines).

Each RL row (``prompt`` = user turn(s) with ``<image>``, ``images``, ``reward_model.ground_truth``,
``data_source``) becomes one SFT row whose ``messages`` are the prompt turns followed by one
assistant turn: the *aligned GT response*, i.e. exactly the text ViSurf injects as the GT member,
rendered by the recipe's own function (``verl_ext.visurf.reward_control.render_gt``, as
``verl_ext.visurf.gt_injection.gt_response_texts`` calls it), e.g.
``<answer>[{"bbox_2d": [...], "point_2d": [...]}]</answer>``. So every label form the recipe accepts
(JSON string, list / numpy array of objects, one dict, number, string) and every ``data_source``
(the project's table, verl's ``openai/gsm8k`` etc. with ``--gt-template '#### {answer}'``, a
user's own) converts, and a label the GT injection rejects is rejected here with the same
message (``verl_ext/rewards/labels.py``). Coordinates are written in the convention the row's prompt
asks for (``extra_info["coords"]``, missing = the paper's ``abs840``; ``verl_ext.coords``): a file
prepared with ``data_prep --coords rel1000`` for Qwen3-VL gets 0-1000 answers, e.g. the 840-frame box
``[84, 168, 420, 840]`` as ``[100, 200, 500, 1000]``; ``--coords`` checks every object row declares that
convention. ``images`` are copied unchanged,
so verl's ``MultiTurnSFTDataset`` (``verl.trainer.sft_trainer``, ``data.messages_key=messages``,
image column ``images``) replaces each ``<image>`` with its image. ``data_source``, ``ability``,
``reward_model`` and ``extra_info`` are carried over for traceability.

The output is written atomically (hidden temp file, then ``os.replace``); a bad row aborts the
conversion with an error naming the row (index, ``extra_info.id``, data_source) and leaves no
partial output.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.common import AtomicParquetWriter, DataPrepError
from verl_ext.constants import ANSWER_TEMPLATE, DATA_SOURCE_TASK
from verl_ext.coords import COORDS, declared_coords
from verl_ext.rewards.labels import is_missing
from verl_ext.visurf.config import VisurfConfig
from verl_ext.visurf.reward_control import render_gt

logger = logging.getLogger("data_prep.to_sft")

MESSAGES_KEY = "messages"  # verl's default data.messages_key
IMAGE_KEY = "images"  # verl's default image key (MultiTurnSFTDataset: config image_key)
IMAGE_TOKEN = "<image>"
REQUIRED = ("prompt", "data_source", "reward_model")
CARRIED = ("data_source", "ability", "reward_model", "extra_info")  # copied when present
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
BATCH_ROWS = 256

EPILOG = """example:
  python -m data_prep.to_sft --in data/visurf_train.parquet --out data/visurf_train_sft.parquet

The SFT trainer then reads it with its defaults (data.messages_key=messages, images in `images`):
  torchrun --nproc-per-node 8 -m verl.trainer.sft_trainer data.train_files=data/visurf_train_sft.parquet ...
(examples/run_qwen2_5_vl_7b_sft.sh does both steps).
"""


def _row_name(index: int, row: dict) -> str:
    extra = row.get("extra_info") or {}
    rid = extra.get("id") if isinstance(extra, dict) else None
    return f"row {index}" + (f" (id {rid!r}" if rid else " (") + f", data_source {row.get('data_source')!r})"


def row_coords(row: dict, expected: str | None = None, where: str = "row") -> str:
    """The coordinate convention of a row's GT answer: the one its prompt declares
    (``verl_ext.coords.declared_coords(extra_info)``). DataPrepError naming the row for an invalid value,
    or when ``expected`` is given and an object-task row declares another."""
    try:
        declared = declared_coords(row.get("extra_info"))
    except ValueError as e:
        raise DataPrepError(f"{where}: {e}") from None
    if expected is not None and declared != expected and DATA_SOURCE_TASK.get(row.get("data_source")) != "math":
        raise DataPrepError(f"{where}: its prompt was prepared for {declared} coordinates (extra_info.coords), "
                            f"--coords says {expected}; re-run data_prep with --coords {expected}")
    return declared


def sft_messages(row: dict, control: VisurfConfig, index: int = 0, coords: str | None = None) -> list[dict]:
    """The SFT ``messages`` of one RL row: its prompt turns + the aligned GT as the assistant turn, its
    coordinates in the convention the prompt declares (``row_coords``; ``coords``: the one expected).

    Raises DataPrepError naming the row when the prompt, images, label or convention are unusable.
    """
    where = _row_name(index, row)
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise DataPrepError(f"{where}: `prompt` must be a non-empty list of messages, got {prompt!r:.200}")
    for turn in prompt:
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("role"), str)
            or not isinstance(turn.get("content"), str)
        ):
            raise DataPrepError(f"{where}: every prompt message needs a str `role` and `content`, got {turn!r:.200}")
    if prompt[-1]["role"] == "assistant":
        raise DataPrepError(f"{where}: the prompt already ends with an assistant turn")
    n_tokens = sum(len(re.findall(re.escape(IMAGE_TOKEN), t["content"])) for t in prompt)
    n_images = len(row.get(IMAGE_KEY) or [])
    if n_tokens != n_images:
        raise DataPrepError(f"{where}: {n_tokens} {IMAGE_TOKEN} placeholder(s) in the prompt but {n_images} image(s)")
    reward_model = row.get("reward_model") or {}
    ground_truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    if is_missing(ground_truth):
        raise DataPrepError(f"{where}: reward_model.ground_truth is missing or empty")
    convention = row_coords(row, coords, where)
    try:  # the GT injection's rendering (gt_injection.gt_response_texts), any label form and data_source
        answer = render_gt(ground_truth, str(row.get("data_source")), align=control.align,
                           template=control.gt_template, coords=convention)
    except ValueError as e:
        raise DataPrepError(f"{where}: {e}") from None
    return [{"role": t["role"], "content": t["content"]} for t in prompt] + [{"role": "assistant", "content": answer}]


def convert(
    src: str | os.PathLike, out: str | os.PathLike, *, align: bool = True, gt_template: str = ANSWER_TEMPLATE,
    coords: str | None = None,
) -> int:
    """Convert the RL parquet ``src`` into the SFT parquet ``out`` (atomically); returns the rows written.
    ``coords``: the convention every object row must declare (None: each row's own, ``row_coords``)."""
    src = os.fspath(src)
    if not os.path.isfile(src):
        raise DataPrepError(f"missing input parquet: {src}")
    if os.path.abspath(src) == os.path.abspath(os.fspath(out)):
        raise DataPrepError(f"--out must differ from --in ({src})")
    try:
        control = VisurfConfig(align=align, gt_template=gt_template)
    except ValueError as e:
        raise DataPrepError(str(e)) from None
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataPrepError(f"{src} is not a readable parquet file: {e}") from None
    schema_in = pf.schema_arrow
    absent = [c for c in REQUIRED if c not in schema_in.names]
    if absent:
        raise DataPrepError(f"{src}: missing column(s) {absent}; expected a ViSurf RL parquet (data_prep.*)")
    carried = [c for c in CARRIED if c in schema_in.names]
    fields = [pa.field(MESSAGES_KEY, MESSAGE_TYPE)]
    if IMAGE_KEY in schema_in.names:
        fields.append(schema_in.field(IMAGE_KEY))
    fields += [schema_in.field(c) for c in carried]
    schema = pa.schema(fields)

    index = 0
    with AtomicParquetWriter(out, schema=schema) as writer:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            for row in batch.to_pylist():
                new = {MESSAGES_KEY: sft_messages(row, control, index, coords)}
                if IMAGE_KEY in schema_in.names:
                    new[IMAGE_KEY] = row.get(IMAGE_KEY) or []
                new.update({c: row.get(c) for c in carried})
                writer.write(new)
                index += 1
        if index == 0:
            raise DataPrepError(f"{src}: no rows")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.to_sft",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--in", dest="src", required=True, help="RL parquet written by data_prep (prompt, images, ...)")
    parser.add_argument("--out", required=True, help="SFT parquet to write (messages, images, ...)")
    parser.add_argument(
        "--no-align",
        action="store_true",
        help="raw label inside the template instead of the aligned GT (as visurf.align=False)",
    )
    parser.add_argument(
        "--gt-template",
        default=ANSWER_TEMPLATE,
        help=f"answer template with {{answer}} (as visurf.gt_template; default {ANSWER_TEMPLATE!r})",
    )
    parser.add_argument(
        "--coords",
        choices=COORDS,
        default=None,
        help="coordinate convention of the answers (verl_ext/coords.py); default: each row's own, "
        "extra_info.coords as data_prep --coords wrote it (missing: abs840). Given: every object row must "
        "declare it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        n = convert(args.src, args.out, align=not args.no_align, gt_template=args.gt_template, coords=args.coords)
    except DataPrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info("wrote %d SFT rows to %s", n, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
