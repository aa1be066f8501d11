"""The micro reproduction's data: target train pool, validation and test sets, retention set, per-seed order.

All rows come from ``data_prep.synthetic`` (tasks ``grid_source`` / ``grid_target``; see its
docstring for the four target parts). Train pool, validation, test and retention sets are generated
with different seeds, so the split is by seed: the validation rows choose the lr and the checkpoint,
the test rows report. Every method of one seed trains on the same ordered file (``ordered_train``: a
seed-dependent permutation of the pool, cut to ``steps * batch`` rows) with the trainers' shuffling
off, so step ``k`` of every method sees rows ``[k*batch, (k+1)*batch)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_prep.synthetic import GRID_PARTS, GRID_TASKS, generate
from verl_ext.atomic_io import write_atomically, write_text_atomically

PARTS = GRID_PARTS  # target parts: a = known concept, b = new concept, c = non-object, d = reasoning


@dataclass(frozen=True)
class TaskSpec:
    """Sizes and seeds of the target task's files (the source task's pool belongs to ``base.BaseSpec``)."""

    image_size: int = 84  # 3 x 3 visual tokens per image (28 px each after the 2 x 2 merge)
    n_train: int = 320  # target training pool (parts a/b/c/d in turn)
    n_val: int = 48  # validation rows (12 per part): lr and checkpoint selection
    n_test: int = 200  # test rows (50 per part: one row = 0.02 of a part)
    n_retention: int = 48  # held-out source-task rows (forgetting)
    train_seed: int = 100
    val_seed: int = 103
    test_seed: int = 101
    retention_seed: int = 102


@dataclass(frozen=True)
class TaskFiles:
    train_pool: Path
    val: Path
    test: Path
    retention: Path


def part_of(row_id: str) -> str:
    """Part of a grid row from its id ``grid_target-<part>-<seed>-<i>`` / ``grid_source-source-...``."""
    fields = str(row_id).split("-")
    if len(fields) < 4 or fields[0] not in GRID_TASKS:
        raise ValueError(f"row id {row_id!r} is not a {' / '.join(GRID_TASKS)} id")
    return fields[1]


def make_task(out_dir: str | Path, spec: TaskSpec = TaskSpec()) -> TaskFiles:
    """Write (or reuse, when ``task_spec.json`` matches) the four parquet files under ``out_dir``."""
    out = Path(out_dir)
    files = TaskFiles(out / "target_train_pool.parquet", out / "target_val.parquet", out / "target_test.parquet",
                      out / "retention.parquet")
    marker = out / "task_spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(spec) and all(
            p.is_file() for p in asdict(files).values()):
        return files
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    s = spec.image_size
    generate("grid_target", spec.n_train, spec.train_seed, str(files.train_pool), image_size=s, split="train")
    generate("grid_target", spec.n_val, spec.val_seed, str(files.val), image_size=s, split="val")
    generate("grid_target", spec.n_test, spec.test_seed, str(files.test), image_size=s, split="test")
    generate("grid_source", spec.n_retention, spec.retention_seed, str(files.retention), image_size=s, split="test")
    write_text_atomically(marker, json.dumps(asdict(spec)))
    return files


def training_order(n_pool: int, n_rows: int, seed: int) -> np.ndarray:
    """Row indices of the ordered training file: concatenated permutations of ``range(n_pool)``
    drawn from ``np.random.default_rng(seed)`` (epoch after epoch), cut to ``n_rows``."""
    if n_pool < 1 or n_rows < 1:
        raise ValueError(f"need n_pool >= 1 and n_rows >= 1, got {n_pool}, {n_rows}")
    rng = np.random.default_rng(seed)
    epochs = -(-n_rows // n_pool)
    return np.concatenate([rng.permutation(n_pool) for _ in range(epochs)])[:n_rows]


def ordered_train(pool: str | Path, out: str | Path, steps: int, batch: int, seed: int) -> Path:
    """Write the ``steps * batch`` rows of ``training_order`` from ``pool`` to ``out`` (same schema)."""
    table = pq.read_table(pool)
    idx = training_order(table.num_rows, steps * batch, seed)
    # runs side by side (driver --jobs) may write the same seed's order at once: the same content,
    # each writer its own temporary file, an atomic replace
    return write_atomically(out, lambda tmp: pq.write_table(table.take(idx), tmp))


def slice_rows(src: str | Path, out: str | Path, start: int, stop: int) -> Path:
    """Rows ``[start, stop)`` of ``src`` to ``out`` (SFT->GRPO: each stage gets its half of the order)."""
    table = pq.read_table(src)
    if not 0 <= start < stop <= table.num_rows:
        raise ValueError(f"{src}: bad slice [{start}, {stop}) of {table.num_rows} rows")
    return write_atomically(out, lambda tmp: pq.write_table(table.slice(start, stop - start), tmp))
