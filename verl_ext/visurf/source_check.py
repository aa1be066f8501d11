"""Start-up check of the data sources a run trains on: a reward for each, a GT for each.

Run once in the driver by the recipe's start-up validation (``check_data_sources(config)``),
before ray starts, on the first ``SAMPLE_ROWS`` rows of every ``data_source`` (the column
``data.reward_fn_key``) of the local parquet files in ``data.train_files`` / ``data.val_files``:

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
   (``reward_manager.score_row``), must score more than an empty response. Otherwise
   ``visurf.gt_template`` does not follow the reward's answer convention (verl's GSM8K scorer
   gives ``<answer>72</answer>`` 0: it reads ``#### 72``) and the GT member would teach nothing.

With the recipe's reward, one split may not mix the project's sources with sources verl scores:
their reward dicts differ in keys and verl 0.9.1's agent loop stacks ``reward_extra_info`` by the
first row's keys (a ``KeyError`` in some step otherwise).

Files that are not local parquet (``hdfs://``, other formats) are skipped with a log line; a
problem there still fails at step 1 (the reward worker's error, or the GT injection's
``sources_without_gt`` check), naming the source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from verl_ext.constants import DATA_SOURCE_TASK
from verl_ext.rewards.labels import is_missing

__all__ = ["SAMPLE_ROWS", "check_data_sources", "resolve_reward_fn", "sample_rows", "verl_scores_source"]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 8  # rows per data_source read at start-up
VERL_SCORER = "verl's default_compute_score"
EMPTY_RESPONSE = ""


def data_files(config: DictConfig, key: str) -> list[str]:
    """``data.<key>`` (``train_files`` / ``val_files``: a str or a list) as a list of paths."""
    value = OmegaConf.select(config, f"data.{key}", default=None)
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def sample_rows(files: Sequence[str], key: str,
                per_source: int = SAMPLE_ROWS) -> tuple[dict[str, list[dict]], list[str]]:
    """The first ``per_source`` rows of every ``data_source`` (column ``key``) of local parquet files.

    Returns ``({data_source: [{"ground_truth": ..., "extra_info": ...}, ...]}, skipped files)``.
    Rows are read as verl's dataset reads them (pyarrow -> Python objects: a list-of-struct label
    is a list of dicts).
    """
    import pyarrow.parquet as pq

    samples: dict[str, list[dict]] = {}
    skipped: list[str] = []
    for path in files:
        if not (path.endswith(".parquet") and os.path.isfile(path)):
            skipped.append(path)
            continue
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if key not in names:
            skipped.append(f"{path} (no {key!r} column)")
            continue
        sources = pf.read(columns=[key])[key].to_numpy(zero_copy_only=False).astype(str)
        order = np.argsort(sources, kind="stable")  # rows grouped by source, file order kept within
        first = np.searchsorted(sources[order], sources[order], side="left")
        take = np.sort(order[np.arange(len(order)) - first < per_source])
        columns = [c for c in ("reward_model", "extra_info") if c in names]
        table = pf.read(columns=columns).take(take) if columns else None
        rows = table.to_pylist() if table is not None else [{} for _ in take]
        for source, row in zip(sources[take].tolist(), rows, strict=True):
            bucket = samples.setdefault(source, [])
            if len(bucket) < per_source:
                rm = row.get("reward_model")
                bucket.append({"ground_truth": rm.get("ground_truth") if isinstance(rm, dict) else None,
                               "extra_info": row.get("extra_info")})
    return samples, skipped


def _is_recipe_reward(path: str) -> bool:
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
    if path and not _is_recipe_reward(str(path)):
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
            text = render_gt(row["ground_truth"], source, align=visurf.align, template=visurf.gt_template)
        except ValueError as e:
            problem = str(e)
            continue
        return {**row, "gt_text": text}, ""
    return None, problem


def check_data_sources(config: DictConfig) -> dict[str, str]:
    """Validate every data source of the run's data (module docstring); returns
    ``{data_source: what scores it}``. Raises ValueError naming the source and the fix."""
    from verl.utils.reward_score import default_compute_score  # noqa: F401  (verl must be importable)

    from verl_ext.reward_manager import score_row
    from verl_ext.rewards import no_reward_message

    key = str(OmegaConf.select(config, "data.reward_fn_key", default="data_source") or "data_source")
    per_split = {split: sample_rows(data_files(config, f"{split}_files"), key) for split in ("train", "val")}
    samples = {source: rows for split in ("val", "train") for source, rows in per_split[split][0].items()}
    skipped = per_split["train"][1] + per_split["val"][1]
    if skipped:
        logger.info("visurf: start-up data-source check skips %s (not local parquet)", ", ".join(skipped))
    if not samples:
        return {}
    reward_fn, reward_name = resolve_reward_fn(config)
    user_reward = not reward_name.startswith("the recipe's")
    scored_by: dict[str, str] = {}
    no_reward: list[str] = []
    for source, rows in sorted(samples.items()):
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

    from verl_ext.visurf.config import visurf_config

    visurf = visurf_config(config.get("visurf"))  # the typed block: its defaults and checks, one home
    if not visurf.enable:
        return scored_by
    thinking = visurf.gt_thinking_reward
    for source, rows in sorted(samples.items()):
        row, problem = _render(rows, source, visurf)
        if row is None:
            raise ValueError(f"visurf: data_source {source!r} gets no GT member: {problem}. Fix the labels "
                             "(reward_model.ground_truth) or visurf.gt_template / visurf.align")
        gt = score_row(reward_fn, source, row["gt_text"], row["ground_truth"], row["extra_info"],
                       is_gt=True, gt_thinking_reward=thinking)["score"]
        empty = score_row(reward_fn, source, EMPTY_RESPONSE, row["ground_truth"], row["extra_info"],
                          is_gt=False, gt_thinking_reward=thinking)["score"]
        if not gt > empty:
            raise ValueError(
                f"visurf: the GT of data_source {source!r} renders as {row['gt_text']!r} "
                f"(visurf.gt_template={visurf.gt_template!r}) and scores {gt:g} under {scored_by[source]}, "
                f"no more than an empty response ({empty:g}): the template does not follow the reward's answer "
                "convention, so the GT member would teach nothing. Set visurf.gt_template to it, e.g. "
                "'#### {answer}' (verl's GSM8K), '\\boxed{{answer}}' (verl's MATH / Geometry3K)")
        logger.info("visurf: data_source %r: reward %s, GT %r scores %g (empty response %g)",
                    source, scored_by[source], row["gt_text"], gt, empty)
    return scored_by
