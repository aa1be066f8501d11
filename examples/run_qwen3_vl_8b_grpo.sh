#!/usr/bin/env bash
# GRPO baseline on Qwen3-VL-8B-Instruct: exactly run_qwen3_vl_8b_visurf.sh with `visurf.enable=False`
# - same model, data (prepared with --coords rel1000), rewards (read in 0-1000 coordinates) and
# hyper-parameters; G = 8 sampled rollouts per prompt and no GT member (verl's `grpo` estimator and
# `vanilla` policy loss, n = G).
#
#   bash examples/run_qwen3_vl_8b_grpo.sh                      # every variable of the ViSurf script works here
#   DRY_RUN=1 bash examples/run_qwen3_vl_8b_grpo.sh            # print + validate, start nothing
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export EXP_NAME=${EXP_NAME:-qwen3_vl_8b_grpo}
export VISURF_ENABLE=False
exec bash "$HERE/run_qwen3_vl_8b_visurf.sh" "$@"
