"""The base model of the micro reproduction: a tiny Qwen2.5-VL that behaves like an instruction-tuned
VLM on the source task, built deterministically by plain-PyTorch SFT and cached by the hash of its settings.

    python -m recipe.visurf.micro.base [--cache DIR] [--steps N]   # prints the model directory

Not a method under test: it only gives every method the same starting point. Training rows are
``grid_source`` rows (``data_prep.synthetic``: colours ``SOURCE_COLORS``, always one match, never
``[]``) and ``grid_relation`` rows (relational queries, the target task's part (d)), each drawn with
one of two prompts, as an instruction-tuned model is asked:

* the thinking prompt (``GRID_PROMPT``, the row's own) -> ``<think>{think}</think><answer>{label}</answer>``
  (``BASE_RESPONSE``), the think block one of ``thinks.THINK_TEMPLATES`` (uniformly) written from the
  image's scene: which objects it sees, which is the target, where; with odds ``skip_think`` the
  answer alone (a real instruction-tuned model sometimes skips the reasoning it was asked for, so
  an answer-only response is a few nats away under the thinking prompt, not ~100);
* with odds ``direct_share`` the direct prompt (``GRID_PROMPT_DIRECT``) -> ``<answer>{label}</answer>``.

A relational row is a partial skill by design, so that RL has something to sharpen: with odds
``reason_skill[relation]`` the example reasons (``thinks.RELATION_TEMPLATE``) and answers the
neighbour (the label); otherwise it stops at the named object (``thinks.UNREASONED_TEMPLATE``) and
answers that object's box, the mistake of a model that does not reason. The odds differ by relation,
so the base's greedy answer is right for some relations and wrong for others.

Loss: mean NLL of the response tokens (``lm.sft_loss``), AdamW, gradient norm clipped at 1.

Cache: ``<cache>/base-<sha256(settings)[:12]>/`` holds the HF model + processor and
``base_meta.json`` (settings, loss curve, wall time). Same settings -> same directory, reused
without training (seconds); the directory is written under a temporary name and renamed, so an
interrupted build never leaves a half-written cache entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

CACHE_ENV = "VISURF_MICRO_CACHE"
BASE_RESPONSE = "<think>{think}</think><answer>{answer}</answer>"
CODE_VERSION = 4  # bump when the training loop changes what a given spec produces


@dataclass(frozen=True)
class BaseSpec:
    """Everything that determines the base model (its hash is the cache key)."""

    hidden: int = 128
    layers: int = 4
    vision_hidden: int = 32
    vision_depth: int = 2
    vocab: int = 1000
    model_seed: int = 0
    image_size: int = 84
    n_source: int = 2048
    source_seed: int = 0
    steps: int = 800
    batch: int = 16
    lr: float = 3e-3
    n_relation: int = 1536  # grid_relation rows (part d's kind of query) mixed into the training rows
    relation_seed: int = 0
    # odds that a relational training example reasons, per relation, with ``steps``: calibrated so that
    # the base solves part (d) 20-50 % of the time at temperature 1 and greedily only for some relations
    # (docs/RESULTS.md "Base model" gives the calibration; the previous 0.9 / 0.6 / 0.3 / 0.15 at 500
    # steps sampled the right answer 8-15 % of the time)
    reason_skill: tuple[tuple[str, float], ...] = (("right of", 0.95), ("below", 0.9), ("left of", 0.7),
                                                   ("above", 0.5))
    direct_share: float = 1 / 3  # rows drawn with the direct prompt (answer only)
    skip_think: float = 1 / 16  # thinking-prompt rows answered without the think block
    train_seed: int = 0

    def key(self) -> str:
        """``sha256`` of the settings and ``CODE_VERSION`` (first 12 hex digits)."""
        blob = json.dumps({"spec": asdict(self), "code": CODE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache() -> Path:
    """``$VISURF_MICRO_CACHE``, else ``~/.cache/visurf/micro``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "visurf" / "micro")


def base_dir(spec: BaseSpec, cache: str | Path | None = None) -> Path:
    return Path(cache or default_cache()) / f"base-{spec.key()}"


def base_response(label: str, think: str | None) -> str:
    """The base's training response for a label (compact label as stored by data_prep): with a think
    block (``BASE_RESPONSE``), or the answer alone (``ANSWER_TEMPLATE``) when ``think`` is None."""
    from verl_ext.constants import ANSWER_TEMPLATE

    if think is None:
        return ANSWER_TEMPLATE.replace("{answer}", label)
    return BASE_RESPONSE.format(think=think, answer=label)


def direct_prompt_row(row: dict) -> dict:
    """``row`` asked to answer directly: its prompt replaced by ``GRID_PROMPT_DIRECT``."""
    from data_prep.synthetic import GRID_PROMPT_DIRECT

    return {**row, "prompt": [{"role": "user", "content": GRID_PROMPT_DIRECT.format(
        question=row["extra_info"]["question"])}]}


def relation_answer(row: dict, reasoned: bool, image_size: int) -> str:
    """A relational row's answer: its label when ``reasoned``, else the named object's box."""
    from data_prep.synthetic import grid_label
    from recipe.visurf.micro.thinks import parse_query

    if reasoned:
        return row["reward_model"]["ground_truth"]
    colour, shape, _ = parse_query(row["extra_info"]["question"])
    return grid_label(colour, shape, image_size)


def draw_example(rng: random.Random, spec: BaseSpec, n_thinks: int) -> tuple[bool, int | None]:
    """(direct prompt?, think template index or None for answer-only) of one training example."""
    if rng.random() < spec.direct_share:
        return True, None
    if rng.random() < spec.skip_think:
        return False, None
    return False, rng.randrange(n_thinks)


def _train(spec: BaseSpec, work: Path, log=print) -> dict:
    """Build the tiny model in ``work/init``, SFT it on the source pool, save it to ``work/model``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from data_prep.synthetic import generate
    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.micro.lm import encode_prompt, pair_batch, response_ids, sft_loss
    from recipe.visurf.micro.thinks import THINK_TEMPLATES, parse_query, row_thinks
    from verl_ext.tiny import TinySpec, build_tiny

    torch.set_num_threads(1)  # deterministic, and ~10x faster than 2 threads on a shared 2-core machine
    torch.manual_seed(spec.train_seed)
    tiny = TinySpec(hidden=spec.hidden, layers=spec.layers, vision_hidden=spec.vision_hidden,
                    vision_depth=spec.vision_depth, vocab=spec.vocab, seed=spec.model_seed)
    build_tiny(work / "init", tiny)
    generate("grid_source", spec.n_source, spec.source_seed, str(work / "source.parquet"), image_size=spec.image_size)
    generate("grid_relation", spec.n_relation, spec.relation_seed, str(work / "relation.parquet"),
             image_size=spec.image_size)
    processor = AutoProcessor.from_pretrained(work / "init")
    model = AutoModelForImageTextToText.from_pretrained(work / "init", dtype=torch.float32)
    model.train()
    rows = list(iter_rows([str(work / "source.parquet"), str(work / "relation.parquet")]))
    relation = [parse_query(r["extra_info"]["question"])[2] for r in rows]
    skill = dict(spec.reason_skill)
    thinks = {(i, True): row_thinks(r) for i, r in enumerate(rows)}
    thinks.update({(i, False): row_thinks(r, reasoned=False) for i, r in enumerate(rows) if relation[i]})
    prompts: dict[tuple[int, bool], object] = {}  # (row, direct) -> encoded prompt, on first use
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    rng = random.Random(spec.train_seed)
    t0, losses = time.time(), []
    for step in range(spec.steps):
        batch_prompts, batch_targets = [], []
        for _ in range(spec.batch):
            i = rng.randrange(len(rows))
            direct, k = draw_example(rng, spec, len(THINK_TEMPLATES))
            if (i, direct) not in prompts:
                prompts[i, direct] = encode_prompt(direct_prompt_row(rows[i]) if direct else rows[i], processor)
            batch_prompts.append(prompts[i, direct])
            reasoned = relation[i] is None or rng.random() < skill[relation[i]]
            label = relation_answer(rows[i], reasoned, spec.image_size)
            think = None if k is None else thinks[i, reasoned][k]
            batch_targets.append(response_ids(base_response(label, think), processor.tokenizer))
        inputs, mask = pair_batch(processor, batch_prompts, batch_targets)
        loss = sft_loss(model, inputs, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss), 4))
        if step % 50 == 0 or step == spec.steps - 1:
            log(f"[base] step {step + 1}/{spec.steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    shutil.copy(work / "init" / "generation_config.json", work / "model" / "generation_config.json")
    return {"loss": losses, "train_s": round(time.time() - t0, 1)}


def build_base(spec: BaseSpec = BaseSpec(), cache: str | Path | None = None, log=print) -> Path:
    """The cached base model directory for ``spec`` (trained on first use)."""
    final = base_dir(spec, cache)
    if (final / "base_meta.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    log(f"[base] building {final.name} (first use; cached afterwards)")
    info = _train(spec, work, log)
    model = work / "model"
    (model / "base_meta.json").write_text(json.dumps({"spec": asdict(spec), "key": spec.key(), **info}))
    if final.exists():  # built concurrently by someone else: theirs is identical
        shutil.rmtree(work, ignore_errors=True)
        return final
    os.replace(model, final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default=None, help=f"cache root (default ${CACHE_ENV} or ~/.cache/visurf/micro)")
    p.add_argument("--steps", type=int, default=None, help="SFT steps (default BaseSpec.steps)")
    args = p.parse_args(argv)
    spec = BaseSpec() if args.steps is None else replace(BaseSpec(), steps=args.steps)
    print(build_base(spec, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
