"""Micro-scale reproduction of ViSurf on CPU (docs/RESULTS.md).

* ``task``       — the coarse-grid source task (the base's) and target task (parts a/b/c), held-out and
  retention sets, and the per-seed training order every method shares (``data_prep.synthetic``).
* ``lm``         — batched teacher-forced encoding of (prompt, response) pairs for a Qwen2.5-VL: the
  plain-PyTorch SFT step of the base stage and the response log-likelihood of the evaluation.
* ``base``       — the deterministic, cached base model (plain PyTorch SFT of a tiny Qwen2.5-VL on the
  source task with the answer format), keyed by the hash of its settings.
* ``evaluation`` — greedy held-out / retention evaluation with the evaluation CLI's scorer, per part,
  plus the held-out log-likelihood of the GT answers.
* ``results``    — the results file (``docs/results/micro.json``): per-run records, mean ± std tables,
  curves (matplotlib).
* ``driver``     — ``python -m recipe.visurf.micro.driver``: trains every method through the real verl
  recipe (``recipe.visurf.main_visurf``; SFT through ``verl.trainer.sft_trainer``) from the same base,
  with the same data order, optimizer steps and seeds, and evaluates every run.
* ``demo``       — the CPU main job (``examples/run_tiny_visurf_cpu.sh``): GRPO and two ViSurf variants from the
  cached base, before/after table.
"""
