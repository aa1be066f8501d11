#!/usr/bin/env bash
# Micro-scale reproduction of the ViSurf paper's comparison on CPU (docs/RESULTS.md): from one cached
# base model (a tiny Qwen2.5-VL that thinks about the image when asked to and answers directly when
# asked to, pre-trained on a synthetic source task), SFT (verl's SFT trainer), GRPO, SFT->GRPO and
# ViSurf (the real recipe), each with its lr chosen on validation rows from a small grid, then on 3
# seeds; plus one-switch ablations at ViSurf's lr; trained on the same target rows in the same order
# for the same optimizer steps, evaluated on test rows (parts: known concept / new concept /
# non-object / reasoning) at the final step and at the best validation checkpoint, and on a
# retention set of the source task.
#
#   bash examples/reproduce_micro.sh                 # the full run (29 runs, 54 min measured on 2 cores,
#                                                    #   base cached; docs/RESULTS.md "Budget"):
#                                                    #   docs/results/micro.json, the tables in
#                                                    #   docs/RESULTS.md, docs/micro_*.png
#   SMOKE=1 bash examples/reproduce_micro.sh         # the same pipeline at toy size (CI)
#   bash examples/reproduce_micro.sh --only visurf grpo --seeds 1   # any driver flag (--help)
#   bash examples/reproduce_micro.sh --only visurf_gt_think --ablation-seeds 1   # an extra ablation, added
#                                                    #   to the same report
#   python -m recipe.visurf.micro.calibrate          # the base's parts, (d) per relation (BaseSpec's check)
#
# Runs train two at a time (--jobs 2, the default; --jobs 1: one after another): one run keeps about one
# of two cores busy, and no number depends on it (seeded, batch-invariant rollouts); per-run wall times do.
# Finished runs are reused on a rerun (outputs/micro/runs/*/result.json), so an interrupted run resumes.
# The base model is cached under ${VISURF_MICRO_CACHE:-~/.cache/visurf/micro} (keyed by its settings).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$ROOT/scripts/setup_venv.sh"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
if [[ "${SMOKE:-0}" == 1 ]]; then
    exec "$ROOT/.venv/bin/python" -m recipe.visurf.micro.driver --smoke --out "${OUT:-$ROOT/outputs/micro_smoke}" "$@"
fi
exec "$ROOT/.venv/bin/python" -m recipe.visurf.micro.driver --out "${OUT:-$ROOT/outputs/micro}" "$@"
