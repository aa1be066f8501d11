#!/usr/bin/env bash
# ViSurf on CPU, end to end, in a few minutes, showing that it trains a model: starts from a cached
# tiny Qwen2.5-VL that behaves like a small instruction-tuned VLM on a synthetic source task -- asked
# to think, it writes what it sees in the image and which object it picks, then answers; asked to
# answer directly, it answers (built on first use, then reused: recipe/visurf/micro/base.py; times: docs/RESULTS.md "Budget (measured)")
# -- and trains SFT (verl's SFT trainer), GRPO and ViSurf (the real verl 0.9.1 trainer,
# recipe.visurf.main_visurf) on the same rows of a target task for the same number of steps, each at
# its lr (recipe/visurf/micro/demo.py: LRS); prints ViSurf's per-step metrics and a before/after
# table on the test rows (accuracy overall and per part: known concept, new concept, non-object,
# reasoning; format; log-likelihood of the correct answer).
# Sets up .venv on first use (idempotent). The full comparison: examples/reproduce_micro.sh.
#
#   bash examples/run_tiny_visurf_cpu.sh                                   # defaults below
#   STEPS=48 bash examples/run_tiny_visurf_cpu.sh                          # more steps
#   bash examples/run_tiny_visurf_cpu.sh actor_rollout_ref.rollout.n=8     # extra args = verl/Hydra
#                                                                          #   overrides (RL runs)
#   bash examples/run_tiny_visurf_cpu.sh --jobs 1                          # one run at a time (default:
#                                                                          #   two side by side; same table)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OUT=${OUT:-$ROOT/outputs/tiny_visurf_cpu}   # base evaluation, data, runs, logs
STEPS=${STEPS:-32}                          # optimizer steps per method

bash "$ROOT/scripts/setup_venv.sh"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m recipe.visurf.micro.demo --out "$OUT" --steps "$STEPS" "$@"
