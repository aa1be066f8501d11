#!/usr/bin/env bash
# ViSurf on CPU, end to end, in a few minutes, showing that it trains a model: starts from a cached
# tiny Qwen2.5-VL that already knows the answer format and a synthetic source task (built on first
# use, ~2-3 min, then reused: recipe/visurf/micro/base.py), trains ViSurf and GRPO through the real
# verl 0.9.1 trainer (recipe.visurf.main_visurf) on the same rows of a target task for the same
# number of steps, and prints ViSurf's per-step metrics and a before/after table on held-out rows
# (accuracy overall, on the new concept and on non-object queries) for base, GRPO and ViSurf.
# Sets up .venv on first use (idempotent). The full comparison: examples/reproduce_micro.sh.
#
#   bash examples/run_tiny_visurf_cpu.sh                                   # defaults below
#   STEPS=20 bash examples/run_tiny_visurf_cpu.sh                          # more steps
#   bash examples/run_tiny_visurf_cpu.sh actor_rollout_ref.actor.optim.lr=5e-4   # extra args = verl/Hydra
#                                                                          #   overrides (both runs)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OUT=${OUT:-$ROOT/outputs/tiny_visurf_cpu}   # base evaluation, data, runs, logs
STEPS=${STEPS:-12}                          # optimizer steps per method

bash "$ROOT/scripts/setup_venv.sh"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m recipe.visurf.micro.demo --out "$OUT" --steps "$STEPS" "$@"
