#!/usr/bin/env bash
# GRPO baseline (docs/METHOD.md §6): exactly run_qwen2_5_vl_7b_visurf.sh with `visurf.enable=False`
# - same model, data, rewards and hyper-parameters; G = 8 sampled rollouts per prompt and no GT member
# (the recipe then uses verl's `grpo` estimator and `vanilla` policy loss, n = G).
#
#   bash examples/run_qwen2_5_vl_7b_grpo.sh                    # every variable of the ViSurf script works here
#   MODEL_PATH=/ckpt/sft/huggingface bash examples/run_qwen2_5_vl_7b_grpo.sh   # GRPO from another checkpoint
#   DRY_RUN=1 bash examples/run_qwen2_5_vl_7b_grpo.sh          # print + validate, start nothing
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export EXP_NAME=${EXP_NAME:-qwen2_5_vl_7b_grpo}
export VISURF_ENABLE=False
exec bash "$HERE/run_qwen2_5_vl_7b_visurf.sh" "$@"
