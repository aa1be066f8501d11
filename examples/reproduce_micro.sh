#!/usr/bin/env bash
# Micro-scale reproduction of the ViSurf paper's comparison on CPU (docs/RESULTS.md): from one cached
# base model (a tiny Qwen2.5-VL pre-trained on a synthetic source task), SFT (verl's SFT trainer),
# GRPO, SFT->GRPO and ViSurf (the real recipe), plus one-switch ablations, trained on the same target
# rows in the same order for the same optimizer steps, evaluated on held-out target rows (parts:
# known concept / new concept / non-object) and on a retention set of the source task.
#
#   bash examples/reproduce_micro.sh                 # the full run (~50 min on 2 cores): docs/results/micro.json,
#                                                    #   the table in docs/RESULTS.md, docs/micro_*.png
#   SMOKE=1 bash examples/reproduce_micro.sh         # the same pipeline at toy size (< 3 min; CI)
#   bash examples/reproduce_micro.sh --only visurf grpo --seeds 1   # any driver flag (--help)
#
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
