"""The base model of the micro reproduction: a tiny Qwen2.5-VL that knows the answer format and the
source task, built deterministically by plain-PyTorch SFT and cached by the hash of its settings.

    python -m recipe.visurf.micro.base [--cache DIR] [--steps N]   # prints the model directory

Not a method under test: it only gives every method the same starting point. Training rows are
``grid_source`` rows (``data_prep.synthetic``: colours ``SOURCE_COLORS``, always one match, never
``[]``); the response is ``BASE_RESPONSE`` = ``<think>{think}</think><answer>{label}</answer>``,
the format of the reward's thinking + answer components. Loss: mean NLL of the response tokens
(``lm.sft_loss``), AdamW, gradient norm clipped at 1.

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
CODE_VERSION = 3  # bump when the training loop changes what a given spec produces


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
    steps: int = 300
    batch: int = 16
    lr: float = 3e-3
    think: str = "look."
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


def base_response(label: str, think: str) -> str:
    """The base's training response for a label (compact label as stored by data_prep)."""
    return BASE_RESPONSE.format(think=think, answer=label)


def _train(spec: BaseSpec, work: Path, log=print) -> dict:
    """Build the tiny model in ``work/init``, SFT it on the source pool, save it to ``work/model``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from data_prep.synthetic import generate
    from recipe.visurf.eval_backends import iter_rows
    from recipe.visurf.micro.lm import encode_prompt, pair_batch, response_ids, sft_loss
    from verl_ext.tiny import TinySpec, build_tiny

    torch.set_num_threads(1)  # deterministic, and ~10x faster than 2 threads on a shared 2-core machine
    torch.manual_seed(spec.train_seed)
    tiny = TinySpec(hidden=spec.hidden, layers=spec.layers, vision_hidden=spec.vision_hidden,
                    vision_depth=spec.vision_depth, vocab=spec.vocab, seed=spec.model_seed)
    build_tiny(work / "init", tiny)
    generate("grid_source", spec.n_source, spec.source_seed, str(work / "source.parquet"), image_size=spec.image_size)
    processor = AutoProcessor.from_pretrained(work / "init")
    model = AutoModelForImageTextToText.from_pretrained(work / "init", dtype=torch.float32)
    model.train()
    rows = list(iter_rows([str(work / "source.parquet")]))
    prompts = [encode_prompt(r, processor) for r in rows]
    targets = [response_ids(base_response(r["reward_model"]["ground_truth"], spec.think), processor.tokenizer)
               for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    rng = random.Random(spec.train_seed)
    t0, losses = time.time(), []
    for step in range(spec.steps):
        idx = [rng.randrange(len(rows)) for _ in range(spec.batch)]
        inputs, mask = pair_batch(processor, [prompts[i] for i in idx], [targets[i] for i in idx])
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
