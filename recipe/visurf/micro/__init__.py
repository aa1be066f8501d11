"""Micro-scale reproduction of ViSurf on CPU (docs/RESULTS.md).

* ``task``       — the coarse-grid source task (the base's) and target task (parts a/b/c/d), validation,
  test and retention sets, and the per-seed training order every method shares (``data_prep.synthetic``).
* ``thinks``     — the base's think blocks, written from the image's scene in varied wording.
* ``lm``         — batched teacher-forced encoding of (prompt, response) pairs for a Qwen2.5-VL: the
  plain-PyTorch SFT step of the base stage and the response log-likelihood of the evaluation.
* ``base``       — the deterministic, cached base model (plain PyTorch SFT of a tiny Qwen2.5-VL that thinks
  when asked to and answers directly when asked to), keyed by the hash of its settings.
* ``calibrate``  — ``python -m recipe.visurf.micro.calibrate``: how often a base setting solves each part,
  part (d) per relation, and whether (d) lies in its 20-50 % band (the check behind ``BaseSpec``).
* ``evaluation`` — greedy evaluation with the evaluation CLI's scorer, per part, the log-likelihood of
  the GT answers, the base's style gap and sampled accuracy.
* ``results``    — the results file (``docs/results/micro.json``): per-run records, mean ± std tables,
  curves (matplotlib).
* ``driver``     — ``python -m recipe.visurf.micro.driver``: trains every method through the real verl
  recipe (``recipe.visurf.main_visurf``; SFT through ``verl.trainer.sft_trainer``) from the same base,
  with the same data order, optimizer steps and seeds, and evaluates every run.
* ``demo``       — the CPU main job (``examples/run_tiny_visurf_cpu.sh``): SFT, GRPO and ViSurf from the
  cached base, before/after table.
"""
