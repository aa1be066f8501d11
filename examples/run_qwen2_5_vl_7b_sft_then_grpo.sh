#!/usr/bin/env bash
# SFT -> GRPO baseline (docs/METHOD.md §6), both stages in one script:
#   1. run_qwen2_5_vl_7b_sft.sh  - verl's SFT trainer on the aligned GT responses (saves the HF model);
#   2. run_qwen2_5_vl_7b_grpo.sh - GRPO (visurf.enable=False) from $SFT_CKPT_DIR/global_step_<last>/huggingface,
#      <last> read from the SFT run's latest_checkpointed_iteration.txt.
# Every variable of the two scripts works here (MODEL_PATH, TRAIN_FILES, N_GPUS, ...); CKPT_DIR is the GRPO
# stage's, SFT_CKPT_DIR the SFT stage's. Extra args go to the GRPO stage; SFT_ARGS (space-separated) to the SFT one.
#
#   bash examples/run_qwen2_5_vl_7b_sft_then_grpo.sh
#   SFT_MODEL_PATH=/ckpt/sft/global_step_456/huggingface bash examples/run_qwen2_5_vl_7b_sft_then_grpo.sh  # skip SFT
#   SFT_ARGS="optim.lr=2e-5" bash examples/run_qwen2_5_vl_7b_sft_then_grpo.sh trainer.total_training_steps=200
#   DRY_RUN=1 bash examples/run_qwen2_5_vl_7b_sft_then_grpo.sh   # print + validate both stages, start nothing
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

PROJECT=${PROJECT:-visurf}
EXP_NAME=${EXP_NAME:-qwen2_5_vl_7b_sft_then_grpo}
SFT_EXP_NAME=${SFT_EXP_NAME:-${EXP_NAME}_sft}
SFT_CKPT_DIR=${SFT_CKPT_DIR:-$ROOT/checkpoints/$PROJECT/$SFT_EXP_NAME}
GRPO_CKPT_DIR=${CKPT_DIR:-$ROOT/checkpoints/$PROJECT/$EXP_NAME}
SFT_MODEL_PATH=${SFT_MODEL_PATH:-}               # set: skip stage 1, GRPO starts from this HF model directory
read -r -a SFT_EXTRA <<< "${SFT_ARGS:-}"
export PROJECT

if [[ -z "$SFT_MODEL_PATH" ]]; then
    echo "=== stage 1/2: SFT ($SFT_CKPT_DIR) ==="
    EXP_NAME="$SFT_EXP_NAME" CKPT_DIR="$SFT_CKPT_DIR" \
        bash "$HERE/run_qwen2_5_vl_7b_sft.sh" ${SFT_EXTRA[@]+"${SFT_EXTRA[@]}"}
    TRACKER="$SFT_CKPT_DIR/latest_checkpointed_iteration.txt"
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        SFT_MODEL_PATH="$SFT_CKPT_DIR/global_step_LAST/huggingface"
        echo "(DRY_RUN: after stage 1, LAST = the step in $TRACKER)"
    else
        [[ -f "$TRACKER" ]] || { echo "error: SFT finished without a checkpoint ($TRACKER missing)" >&2; exit 1; }
        SFT_MODEL_PATH="$SFT_CKPT_DIR/global_step_$(cat "$TRACKER")/huggingface"
        [[ -f "$SFT_MODEL_PATH/config.json" ]] || {
            echo "error: no HF model in $SFT_MODEL_PATH (SFT must save checkpoint.save_contents with hf_model)" >&2
            exit 1; }
    fi
else
    echo "=== stage 1/2: SFT skipped (SFT_MODEL_PATH=$SFT_MODEL_PATH) ==="
fi

echo "=== stage 2/2: GRPO from $SFT_MODEL_PATH ($GRPO_CKPT_DIR) ==="
MODEL_PATH="$SFT_MODEL_PATH" EXP_NAME="$EXP_NAME" CKPT_DIR="$GRPO_CKPT_DIR" \
    exec bash "$HERE/run_qwen2_5_vl_7b_grpo.sh" "$@"
