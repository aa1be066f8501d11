#!/usr/bin/env bash
# ViSurf on CPU, end to end, in a few minutes, showing that it trains a model: starts from a cached
# tiny Qwen2.5-VL that already knows the answer format and a synthetic source task (built on first
# use, ~1.5 min, then reused: recipe/visurf/micro/base.py), trains GRPO and ViSurf through the real
# verl 0.9.1 trainer (recipe.visurf.main_visurf) on the same rows of a target task for the same
# number of steps -- ViSurf twice: with the recipe's default answer-only GT, and with the GT in the
# policy's own response style (<think>look.</think><answer>...</answer>; docs/RESULTS.md: at this
# scale the default GT's style switch collapses the format) -- and prints the ViSurf runs' per-step
# metrics and a before/after table on held-out rows (accuracy overall, known concept, new concept,
# non-object; format; log-likelihood of the correct answer).
# Sets up .venv on first use (idempotent). The full comparison: examples/reproduce_micro.sh.
#
#   bash examples/run_tiny_visurf_cpu.sh                                   # defaults below
#   STEPS=48 bash examples/run_tiny_visurf_cpu.sh                          # more steps
#   bash examples/run_tiny_visurf_cpu.sh actor_rollout_ref.actor.optim.lr=1e-4   # extra args = verl/Hydra
#                                                                          #   overrides (every run)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OUT=${OUT:-$ROOT/outputs/tiny_visurf_cpu}   # base evaluation, data, runs, logs
STEPS=${STEPS:-32}                          # optimizer steps per method

bash "$ROOT/scripts/setup_venv.sh"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m recipe.visurf.micro.demo --out "$OUT" --steps "$STEPS" "$@"
