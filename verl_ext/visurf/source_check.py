"""Start-up check of the data sources a run trains on: a reward for each, a GT for each.

Run once in the driver by the recipe's start-up validation (``check_data_sources(config)``),
before ray starts. Every local parquet file of ``data.train_files`` / ``data.val_files`` is
streamed once (``scan_labels``: ``ParquetFile.iter_batches`` of ``SCAN_BATCH_ROWS`` rows, only the
columns ``data.reward_fn_key`` and ``reward_model.ground_truth``; ``extra_info`` only for the
sampled rows; ``extra_info.coords`` when the file has it), so memory is bounded by one batch, not by
the data. From the stream:

0. **every label** (``label_problem``) — a label the GT renderer rejects (``render_gt``: the label
   rules shared with the recipe's scorers, ``verl_ext/rewards/labels.py``), or a missing label
   where the source's reward raises on one (probed once per source), would crash the reward
   workers mid-training: the run stops naming file, row, data_source and the reason — or, with
   ``visurf.drop_bad_rows=True``, the rows are dropped (``drop_rows``) and counted in the log.
0. **every row's coordinate convention** (``check_declared_coords``) — an object-task row whose prompt
   was written for another convention than the run's ``visurf.coords`` (``extra_info["coords"]``,
   missing = ``abs840``; ``verl_ext.coords``) stops the run naming the first such file and row and the
   fix (re-run data_prep with ``--coords``, or set ``visurf.coords``).

And on the first ``SAMPLE_ROWS`` rows of every ``data_source`` (the column ``data.reward_fn_key``):

1. **a reward** — the fallback chain of the recipe: the user's ``reward.custom_reward_function``
   when they set one; else the project's scorer for the project's sources; else verl's own
   ``default_compute_score`` for the sources verl knows (probed: verl raises
   ``NotImplementedError`` for the others); else ``ValueError(no_reward_message(...))`` naming
   every such source and the two ways to fix it. A scorer verl has but cannot run (e.g. its
   Geometry3K scorer without ``mathruler``) fails here too, with verl's error.
2. **a GT** (``visurf.enable``) — at least one sampled label of the source renders
   (``render_gt``), else ``ValueError`` naming the source and the renderer's message.
3. **a GT worth injecting** (``visurf.enable``) — the rendered GT of the first such label,
   scored as the GT row (``is_gt=True``) exactly as the reward workers score it
   (``verl_ext.visurf.scoring.score_row``), must score more than an empty response. Otherwise
   ``visurf.gt_template`` does not follow the reward's answer convention (verl's GSM8K scorer
   gives ``<answer>72</answer>`` 0: it reads ``#### 72``) and the GT member would teach nothing.
4. **a GT that fits** (``visurf.enable``, when the actor's tokenizer loads in the driver) — the
   sampled GTs are tokenised as the GT agent loop does (``gt_injection.worker_tokenizer``, GT +
   EOS); a source whose every sampled GT exceeds ``actor_rollout_ref.rollout.response_length``
   would train as plain GRPO (every GT skipped as ``too_long``): the run stops with the numbers.

With a reward model and no ``reward.custom_reward_function`` (verl scores every row with the
model), steps 1 and 3 are skipped: the model is not running yet.

With the recipe's reward, one split may not mix the project's sources with sources verl scores:
their reward dicts differ in keys and verl 0.9.1's agent loop stacks ``reward_extra_info`` by the
first row's keys (a ``KeyError`` in some step otherwise).

Files the check cannot read here (``hdfs://``, not found here, ``.json`` / ``.jsonl``) are skipped
with a warning naming each and why (the dry run lists them as notes); a problem there still fails at
step 1 (the reward worker's error, or the GT injection's ``sources_without_gt`` check), naming the
source. A file verl would refuse by its name (not ``.parquet`` / ``.json`` / ``.jsonl``), an
unreadable parquet file and a parquet file without the ``data.reward_fn_key`` column stop the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from verl_ext.constants import DATA_SOURCE_TASK
from verl_ext.coords import ABS840
from verl_ext.coords import EXTRA_INFO_KEY as COORDS_KEY
from verl_ext.rewards.labels import is_missing

__all__ = [
    "SAMPLE_ROWS",
    "SCAN_BATCH_ROWS",
    "LabelScan",
    "check_data_sources",
    "check_declared_coords",
    "drop_rows",
    "is_recipe_reward",
    "label_problem",
    "resolve_reward_fn",
    "sample_rows",
    "scan_labels",
    "verl_scores_source",
]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 8  # rows per data_source read at start-up
SCAN_BATCH_ROWS = 4096  # rows per streamed record batch of the every-label scan
MAX_REPORTED = 5  # label problems quoted in the error (all are counted)
CLEAN_SUFFIX = ".visurf_clean.parquet"  # visurf.drop_bad_rows: the file without its bad rows
VERL_SCORER = "verl's default_compute_score"
EMPTY_RESPONSE = ""


def data_files(config: DictConfig, key: str) -> list[str]:
    """``data.<key>`` (``train_files`` / ``val_files``: a str or a list) as a list of paths."""
    value = OmegaConf.select(config, f"data.{key}", default=None)
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


@dataclass
class LabelScan:
    """What ``scan_labels`` read from a list of files."""

    samples: dict[str, list[dict]] = field(default_factory=dict)  # data_source -> first rows
    skipped: list[str] = field(default_factory=list)  # files not read (not local parquet, no key column)
    problems: list[str] = field(default_factory=list)  # the first MAX_REPORTED problems, "file row i ..."
    n_problems: int = 0
    # data_source -> {convention its rows declare (extra_info["coords"], missing = abs840): "file row i" of the first}
    declared: dict[str, dict[str, str]] = field(default_factory=dict)
    bad_rows: dict[str, np.ndarray] = field(default_factory=dict)  # file -> row indices with a problem
    n_rows: int = 0


def _labels(batch: Any, names: Sequence[str]) -> list:
    """``reward_model.ground_truth`` of a record batch as Python objects (None without the column)."""
    if "reward_model" not in names:
        return [None] * batch.num_rows
    column = batch.column("reward_model")
    try:
        return column.field("ground_truth").to_pylist()
    except KeyError:  # a struct without ground_truth
        return [None] * batch.num_rows


DATA_SUFFIXES = (".parquet", ".json", ".jsonl")  # what verl's RLHFDataset reads, chosen by the file name


def unchecked_reason(path: str) -> str:
    """Why the start-up check cannot read the data file ``path`` here ("" when it can: a local
    ``.parquet``): a remote path, a file not found here, a JSON file (verl reads it; its labels
    are checked by the reward workers only). ValueError for a name verl's ``RLHFDataset`` refuses
    (it picks the format by the suffix: ``DATA_SUFFIXES``), before ray starts instead of after."""
    if "://" in path:
        return "remote path, not read at start-up"
    if not path.endswith(DATA_SUFFIXES):
        raise ValueError(f"{path}: verl reads data files by their name, .parquet, .json or .jsonl only "
                         "(RLHFDataset: 'Unsupported file format' once the workers start); rename it (a parquet "
                         "file: .parquet)")
    if not os.path.isfile(path):
        return "not found here"
    if not path.endswith(".parquet"):
        return "JSON: its labels are not checked at start-up"
    return ""


def scan_labels(files: Sequence[str], key: str, per_source: int = SAMPLE_ROWS,
                label_problem_fn: Callable[[str, Any], str] | None = None,
                batch_rows: int = SCAN_BATCH_ROWS, require_key: bool = True) -> LabelScan:
    """One streamed pass over local parquet files: the first ``per_source`` rows of every
    ``data_source`` (column ``key``) as ``{"ground_truth", "extra_info"}`` dicts, and — with
    ``label_problem_fn(data_source, ground_truth) -> reason | ""`` — every row's label checked.

    Memory: one record batch of ``batch_rows`` rows of the two columns ``key`` and
    ``reward_model.ground_truth`` (pyarrow reads the nested leaf alone), plus the row indices of
    bad rows; ``extra_info`` is read afterwards only up to the last sampled row of the file.
    Rows are read as verl's dataset reads them (pyarrow -> Python objects: a list-of-struct label
    is a list of dicts). Files the check cannot read here (``unchecked_reason``: remote, not found,
    JSON) are listed in ``skipped`` with the reason. ValueError naming the file for a name verl
    refuses, an unreadable parquet file, and (``require_key``) a file without the ``key`` column.
    """
    import pyarrow.parquet as pq

    import pyarrow as pa

    scan = LabelScan()
    for path in files:
        reason = unchecked_reason(path)
        if reason:
            scan.skipped.append(f"{path} ({reason})")
            continue
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        names = pf.schema_arrow.names
        if key not in names:
            if not require_key:
                scan.skipped.append(f"{path} (no {key!r} column)")
                continue
            raise ValueError(f"{path}: no {key!r} column (has {', '.join(names)}): the reward is chosen per row "
                             f"by data.reward_fn_key={key!r}, so no row could be scored; write the file with "
                             "data_prep (it sets data_source), or add the column")
        columns = [key] + (["reward_model.ground_truth"] if "reward_model" in names else [])
        has_coords = _has_coords_field(pf.schema_arrow)
        if has_coords:
            columns.append(f"extra_info.{COORDS_KEY}")
        sampled: list[tuple[int, str, Any]] = []  # (row, source, label) of this file's samples
        bad: list[int] = []
        offset = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            sources = batch.column(key).to_pylist()
            declared = (batch.column("extra_info").field(COORDS_KEY).to_pylist() if has_coords
                        else [None] * batch.num_rows)
            for i, (source, label) in enumerate(zip(sources, _labels(batch, names))):
                source = str(source)
                scan.declared.setdefault(source, {}).setdefault(
                    ABS840 if declared[i] is None else str(declared[i]), f"{path} row {offset + i}")
                bucket = scan.samples.setdefault(source, [])
                if len(bucket) < per_source:
                    bucket.append({"ground_truth": label, "extra_info": None})
                    sampled.append((offset + i, source, len(bucket) - 1))
                if label_problem_fn is not None:
                    reason = label_problem_fn(source, label)
                    if reason:
                        bad.append(offset + i)
                        scan.n_problems += 1
                        if len(scan.problems) < MAX_REPORTED:
                            scan.problems.append(f"{path} row {offset + i} (data_source={source!r}): {reason}")
            offset += batch.num_rows
        scan.n_rows += offset
        if bad:
            scan.bad_rows[path] = np.asarray(bad, dtype=np.int64)
        if sampled and "extra_info" in names:  # extra_info of the sampled rows only
            last, seen = sampled[-1][0], 0
            wanted = {row: (source, j) for row, source, j in sampled}
            for batch in pf.iter_batches(batch_size=batch_rows, columns=["extra_info"]):
                infos = batch.column("extra_info")
                for row in [r for r in wanted if seen <= r < seen + batch.num_rows]:
                    source, j = wanted[row]
                    scan.samples[source][j]["extra_info"] = infos[row - seen].as_py()
                seen += batch.num_rows
                if seen > last:
                    break
    return scan


def _has_coords_field(schema: Any) -> bool:
    """The file's ``extra_info`` is a struct with a ``coords`` field (``data_prep --coords``)."""
    import pyarrow as pa

    if "extra_info" not in schema.names:
        return False
    kind = schema.field("extra_info").type
    return pa.types.is_struct(kind) and kind.get_field_index(COORDS_KEY) >= 0


def sample_rows(files: Sequence[str], key: str,
                per_source: int = SAMPLE_ROWS) -> tuple[dict[str, list[dict]], list[str]]:
    """The first ``per_source`` rows of every ``data_source`` (column ``key``) of local parquet files:
    ``({data_source: [{"ground_truth": ..., "extra_info": ...}, ...]}, skipped files)``
    (``scan_labels`` without the label check)."""
    scan = scan_labels(files, key, per_source)
    return scan.samples, scan.skipped


def drop_rows(path: str, rows: np.ndarray, batch_rows: int = SCAN_BATCH_ROWS) -> str:
    """``visurf.drop_bad_rows``: write ``path`` without ``rows`` (0-based) beside it as
    ``<name>.visurf_clean.parquet``, streamed batch by batch (all columns, schema kept) and atomically
    (``verl_ext.atomic_io``); returns the new path. Beside the original, so every node that reads the
    original reads the copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from verl_ext.atomic_io import write_atomically

    out = path.removesuffix(".parquet") + CLEAN_SUFFIX
    pf = pq.ParquetFile(path)
    drop = np.asarray(rows, dtype=np.int64)

    def write(tmp) -> None:
        offset = 0
        with pq.ParquetWriter(tmp, pf.schema_arrow) as writer:
            for batch in pf.iter_batches(batch_size=batch_rows):
                index = np.arange(offset, offset + batch.num_rows)
                keep = ~np.isin(index, drop)
                writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(keep)))
                offset += batch.num_rows

    write_atomically(out, write)  # two runs side by side each write their own temp file; readers see a whole one
    return out


def is_recipe_reward(path: str) -> bool:
    """The path is the project's own reward module (what the recipe fills in when none is set)."""
    if path.startswith("pkg://"):
        return path[len("pkg://"):].replace("/", ".").removesuffix(".py") in ("verl_ext.rewards",
                                                                              "verl_ext.rewards.__init__")
    import verl_ext.rewards

    try:
        return Path(path).resolve() == Path(verl_ext.rewards.__file__).resolve()
    except OSError:
        return False


def resolve_reward_fn(config: DictConfig) -> tuple[Callable[..., Any], str]:
    """The reward function of the run and a name for messages: the user's
    ``reward.custom_reward_function`` loaded with verl's own ``get_custom_reward_fn`` when its path
    is set and is not the project's module; else ``verl_ext.rewards.compute_score`` (the project's
    scorers, then verl's ``default_compute_score``)."""
    path = OmegaConf.select(config, "reward.custom_reward_function.path", default=None)
    if path and not is_recipe_reward(str(path)):
        from verl.trainer.ppo.reward import get_custom_reward_fn

        name = OmegaConf.select(config, "reward.custom_reward_function.name", default="compute_score")
        return get_custom_reward_fn(config), f"reward.custom_reward_function {path}:{name}"
    from verl_ext.rewards import compute_score

    return compute_score, "the recipe's reward (verl_ext.rewards.compute_score)"


def verl_scores_source(data_source: str, ground_truth: Any) -> bool:
    """Does verl's ``default_compute_score`` score ``data_source``? It raises
    ``NotImplementedError`` for a source it does not know (its documented contract); any other
    exception (a scorer whose dependency is missing) propagates."""
    from verl.utils.reward_score import default_compute_score

    try:
        default_compute_score(data_source, EMPTY_RESPONSE, ground_truth)
    except NotImplementedError:
        return False
    return True


def _render(rows: list[dict], source: str, visurf: Any) -> tuple[dict | None, str]:
    """(first row whose label renders, with its text under "gt_text"), or (None, first problem);
    ``visurf`` is the typed block (``VisurfConfig``)."""
    from verl_ext.visurf.reward_control import render_gt

    problem = f"none of its first {len(rows)} rows has a label (reward_model.ground_truth)"
    for row in rows:
        if is_missing(row["ground_truth"]):
            continue
        try:
            text = render_gt(row["ground_truth"], source, align=visurf.align, template=visurf.gt_template,
                             coords=visurf.resolved_coords)
        except ValueError as e:
            problem = str(e)
            continue
        return {**row, "gt_text": text}, ""
    return None, problem


def _missing_label_problem(reward_fn: Callable[..., Any] | None, source: str, thinking: str) -> str:
    """"" when ``reward_fn`` scores a row of ``source`` whose label is missing (the row then only
    loses its GT member, counted as ``no_label``), else why not: the reward workers would raise on
    such a row mid-training. ``NotImplementedError`` (no reward for the source at all) is left to
    the reward check."""
    if reward_fn is None:  # a reward model scores the rows
        return ""
    from verl_ext.visurf.scoring import score_row

    try:
        score_row(reward_fn, source, EMPTY_RESPONSE, None, {}, is_gt=False, gt_thinking_reward=thinking)
    except NotImplementedError:
        return ""
    except Exception as e:  # noqa: BLE001  any exception here is one the reward workers would raise
        return f"no label (reward_model.ground_truth missing), which the reward rejects: {type(e).__name__}: {e}"
    return ""


def label_problem(source: str, label: Any, visurf: Any, missing_problem: Callable[[str], str]) -> str:
    """Why the row's label would fail the run ("" when it would not): a present label the GT
    renderer rejects (``render_gt``, whose label rules the recipe's scorers share), or a missing
    label (``is_missing``) where ``missing_problem(source)`` says the reward raises on one."""
    from verl_ext.visurf.reward_control import render_gt

    if is_missing(label):
        return missing_problem(source)
    try:
        render_gt(label, source, align=visurf.align, template=visurf.gt_template,
                  coords=visurf.resolved_coords)
    except ValueError as e:
        return str(e)
    return ""


def _gt_token_counts(config: DictConfig, texts: Sequence[str]) -> list[int] | None:
    """GT + EOS token counts of ``texts`` with the actor's tokenizer, built exactly as the GT
    agent loop's (``gt_injection.worker_tokenizer``); None (logged) when it cannot be loaded here."""
    model = OmegaConf.select(config, "actor_rollout_ref.model", default=None)
    if model is None or not model.get("path"):
        return None
    try:
        from verl_ext.visurf.gt_injection import worker_tokenizer

        tokenizer = worker_tokenizer(model)
    except Exception as e:  # noqa: BLE001  (a hub id offline, hdfs without access): the run checks per batch
        logger.warning("visurf: GT length not checked at start-up, the tokenizer of %s does not load here: %s: %s",
                       model.get("path"), type(e).__name__, e)
        return None
    return [len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts]


def _check_gt_lengths(config: DictConfig, rendered: dict[str, list[str]]) -> None:
    """Stop when every sampled GT of a source exceeds the response length (module docstring, 4)."""
    limit = OmegaConf.select(config, "actor_rollout_ref.rollout.response_length", default=None)
    limit = limit if limit is not None else OmegaConf.select(config, "data.max_response_length", default=None)
    if limit is None or not rendered:
        return
    sources = sorted(rendered)
    counts = _gt_token_counts(config, [t for s in sources for t in rendered[s]])
    if counts is None:
        return
    at = 0
    for source in sources:
        n = np.asarray(counts[at: at + len(rendered[source])])
        at += len(rendered[source])
        fits = int((n <= int(limit)).sum())
        logger.info("visurf: data_source %r: %d of %d sampled GTs fit max_response_length=%d (GT+EOS tokens "
                    "%d..%d)", source, fits, len(n), int(limit), int(n.min()), int(n.max()))
        if fits == 0:
            raise ValueError(
                f"visurf: every sampled GT of data_source {source!r} ({len(n)} rows) is longer than the response "
                f"length {int(limit)} (data.max_response_length): GT + EOS = {int(n.min())}..{int(n.max())} tokens "
                f"(median {int(np.median(n))}), so each would be skipped as too_long and the source would train as "
                f"plain GRPO. Raise data.max_response_length to at least {int(n.max())}, or shorten "
                "visurf.gt_template")


def _reward_model_scores(config: DictConfig) -> bool:
    """verl scores every row with the reward model: ``reward.reward_model.enable`` and no custom
    function (``RewardLoopWorker.compute_score``, verl/experimental/reward_loop/reward_loop.py)."""
    return bool(OmegaConf.select(config, "reward.reward_model.enable", default=False)) and not \
        OmegaConf.select(config, "reward.custom_reward_function.path", default=None)


def check_data_sources(config: DictConfig) -> dict[str, str]:
    """Validate every data source of the run's data (module docstring); returns
    ``{data_source: what scores it}``. Raises ValueError naming the source and the fix."""
    from verl.utils.reward_score import default_compute_score  # noqa: F401  (verl must be importable)

    from verl_ext.rewards import no_reward_message

    from verl_ext.visurf.config import visurf_config

    visurf = visurf_config(config.get("visurf"))  # the typed block: its defaults and checks, one home
    thinking = visurf.gt_thinking_reward
    key = str(OmegaConf.select(config, "data.reward_fn_key", default="data_source") or "data_source")
    rm_scores = _reward_model_scores(config)
    reward: list = []  # (reward_fn, name), resolved on first use: a file-less run needs none

    def resolved() -> tuple[Callable[..., Any] | None, str]:
        if not reward:
            reward.extend((None, "the reward model") if rm_scores else resolve_reward_fn(config))
        return reward[0], reward[1]

    missing: dict[str, str] = {}

    def missing_problem(source: str) -> str:
        if source not in missing:
            missing[source] = _missing_label_problem(resolved()[0], source, thinking)
        return missing[source]

    def problem(source: str, label: Any) -> str:
        return label_problem(source, label, visurf, missing_problem)

    scans = {split: scan_labels(data_files(config, f"{split}_files"), key, label_problem_fn=problem,
                                require_key=not rm_scores)  # a reward model scores rows without a source
             for split in ("train", "val")}
    per_split = {split: (scan.samples, scan.skipped) for split, scan in scans.items()}
    samples = {source: rows for split in ("val", "train") for source, rows in per_split[split][0].items()}
    skipped = per_split["train"][1] + per_split["val"][1]
    if skipped:
        logger.warning("visurf: start-up data-source check skips %s", "; ".join(skipped))
    if not samples:
        return {}
    reward_fn, reward_name = resolved()
    scored_by: dict[str, str] = {}
    if rm_scores:
        scored_by = {source: reward_name for source in samples}
        logger.info("visurf: every row is scored by the reward model (reward.reward_model.enable=True, no "
                    "reward.custom_reward_function): the start-up reward probes are skipped")
    user_reward = not reward_name.startswith("the recipe's")
    no_reward: list[str] = []
    for source, rows in sorted(samples.items()):
        if rm_scores:
            continue
        if user_reward:
            scored_by[source] = reward_name
        elif source in DATA_SOURCE_TASK:
            scored_by[source] = f"the recipe's {DATA_SOURCE_TASK[source]} scorer"
        else:
            label = next((r["ground_truth"] for r in rows if not is_missing(r["ground_truth"])), "")
            try:
                known = verl_scores_source(source, label)
            except Exception as e:  # verl has a scorer for it but it cannot run here
                raise ValueError(f"data_source {source!r} is scored by verl's default_compute_score, which fails "
                                 f"here: {type(e).__name__}: {e}") from e
            if known:
                scored_by[source] = VERL_SCORER
            else:
                no_reward.append(source)
    if no_reward:
        raise ValueError(no_reward_message(no_reward))
    for split, (split_samples, _) in per_split.items():
        ours = sorted(s for s in split_samples if s in DATA_SOURCE_TASK)
        verls = sorted(s for s in split_samples if scored_by.get(s) == VERL_SCORER)
        if not user_reward and ours and verls:
            raise ValueError(
                f"data.{split}_files mixes data sources the recipe scores ({', '.join(ours)}) with sources verl's "
                f"default_compute_score scores ({', '.join(verls)}): their reward dicts have different keys, and "
                "verl 0.9.1's agent loop stacks reward_extra_info by the first row's keys (KeyError mid-step). "
                "Train them in separate runs, or set reward.custom_reward_function to one function that returns "
                "the same keys for every source")

    for split in ("train", "val"):
        check_declared_coords(scans[split].declared, visurf.resolved_coords)
    if visurf.enable:
        _check_gts(config, samples, visurf, reward_fn, scored_by)
    _handle_label_problems(config, scans, visurf.drop_bad_rows)
    return scored_by


def check_declared_coords(declared: dict[str, dict[str, str]], coords: str) -> None:
    """Stop when rows of an object-task source (grounding, gui, anomaly, lesion) declare a coordinate
    convention (``extra_info["coords"]``, missing = ``abs840``; ``verl_ext.coords``) other than the run's
    ``coords``: their prompts ask the model for the other convention, which the recipe does not rewrite.
    Labels need no such check: they are always in the 840 frame and converted by the GT renderer and the
    rewards. ``declared``: ``LabelScan.declared`` (every row of the files, streamed). ValueError naming
    the source, the first such file and row, both conventions and the two fixes; also for a declared
    value that is not a convention."""
    from verl_ext.coords import check_coords
    from verl_ext.rewards.labels import OBJECT_TASKS

    for source, found in sorted(declared.items()):
        if DATA_SOURCE_TASK.get(source) not in OBJECT_TASKS:
            continue
        for value, where in sorted(found.items()):
            try:
                check_coords(value, f"extra_info[{COORDS_KEY!r}]")
            except ValueError as e:
                raise ValueError(f"visurf: {where} (data_source={source!r}): {e}") from None
            if value != coords:
                how = (f" (no extra_info[{COORDS_KEY!r}]: data_prep's default, the Qwen2.5-VL prompts)"
                       if value == ABS840 else "")
                raise ValueError(
                    f"visurf: the run's coordinate convention is visurf.coords={coords}, but {where} "
                    f"(data_source={source!r}) was prepared for {value}{how}: its prompt asks the model for "
                    f"{value} coordinates. Labels are converted (they stay in the 840 frame), prompts are not. "
                    f"Fix: re-run data_prep with --coords {coords} (same labels, the {coords} prompt), or set "
                    f"visurf.coords={value} if this model answers in {value} coordinates (visurf.coords=auto reads "
                    f"the actor's config.json model_type, and falls back to abs840 when it cannot: a hub id not "
                    f"downloaded yet, a family outside verl_ext.coords.MODEL_TYPE_COORDS)")


def _handle_label_problems(config: DictConfig, scans: dict[str, LabelScan], drop: bool) -> None:
    """Stop on the rows ``scan_labels`` found bad, naming the first ``MAX_REPORTED`` — or, with
    ``visurf.drop_bad_rows``, point ``data.<split>_files`` at copies without them (``drop_rows``)."""
    n_bad = sum(scan.n_problems for scan in scans.values())
    n_rows = sum(scan.n_rows for scan in scans.values())
    logger.info("visurf: start-up label check read %d rows, %d bad", n_rows, n_bad)
    if not n_bad:
        return
    if not drop:
        quoted = [p for scan in scans.values() for p in scan.problems][:MAX_REPORTED]
        raise ValueError(
            f"visurf: {n_bad} of {n_rows} rows have a label the reward workers would fail on mid-training: "
            + "; ".join(quoted) + (" ..." if n_bad > len(quoted) else "")
            + ". Fix the labels (reward_model.ground_truth), or set visurf.drop_bad_rows=True to train without "
            "those rows")
    for split, scan in scans.items():
        if not scan.bad_rows:
            continue
        files = data_files(config, f"{split}_files")
        for path, rows in scan.bad_rows.items():
            clean = drop_rows(path, rows)
            files = [clean if f == path else f for f in files]
            logger.warning("visurf: visurf.drop_bad_rows=True: dropped %d of the rows of %s (bad labels); "
                           "training on %s", len(rows), path, clean)
        OmegaConf.update(config, f"data.{split}_files", files, merge=False)


def _check_gts(config: DictConfig, samples: dict[str, list[dict]], visurf: Any,
               reward_fn: Callable[..., Any] | None, scored_by: dict[str, str]) -> None:
    """Steps 2-4 of the module docstring on the sampled rows of every source."""
    from verl_ext.visurf.scoring import score_row
    from verl_ext.visurf.reward_control import render_gt

    thinking = visurf.gt_thinking_reward
    rendered: dict[str, list[str]] = {}
    for source, rows in sorted(samples.items()):
        row, problem = _render(rows, source, visurf)
        if row is None:
            raise ValueError(f"visurf: data_source {source!r} gets no GT member: {problem}. Fix the labels "
                             "(reward_model.ground_truth) or visurf.gt_template / visurf.align")
        texts = []
        for r in rows:
            try:
                texts.append(render_gt(r["ground_truth"], source, align=visurf.align,
                                       template=visurf.gt_template, coords=visurf.resolved_coords))
            except ValueError:  # missing / bad: counted by the label scan
                pass
        rendered[source] = texts
        if reward_fn is None:
            continue
        coords = visurf.resolved_coords
        gt = score_row(reward_fn, source, row["gt_text"], row["ground_truth"], row["extra_info"],
                       is_gt=True, gt_thinking_reward=thinking, coords=coords)["score"]
        empty = score_row(reward_fn, source, EMPTY_RESPONSE, row["ground_truth"], row["extra_info"],
                          is_gt=False, gt_thinking_reward=thinking, coords=coords)["score"]
        if not gt > empty:
            raise ValueError(
                f"visurf: the GT of data_source {source!r} renders as {row['gt_text']!r} "
                f"(visurf.gt_template={visurf.gt_template!r}) and scores {gt:g} under {scored_by[source]}, "
                f"no more than an empty response ({empty:g}): the template does not follow the reward's answer "
                "convention, so the GT member would teach nothing. Set visurf.gt_template to it, e.g. "
                "'#### {answer}' (verl's GSM8K), '\\boxed{{answer}}' (verl's MATH / Geometry3K)")
        logger.info("visurf: data_source %r: reward %s, GT %r scores %g (empty response %g)",
                    source, scored_by[source], row["gt_text"], gt, empty)
    _check_gt_lengths(config, rendered)
