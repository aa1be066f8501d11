#!/usr/bin/env bash
# SFT baseline (docs/METHOD.md §6): verl's own SFT trainer (`verl.trainer.sft_trainer`, its
# MultiTurnSFTDataset with images) on the same RL parquet as ViSurf/GRPO. The RL rows are converted
# first with `python -m data_prep.to_sft`: prompt + the aligned GT response (the exact text ViSurf
# injects as the GT member) as the assistant turn. Then torchrun on N_GPUS GPUs per node.
# The checkpoint also saves the HF model (checkpoint.save_contents += hf_model) so that GRPO can start
# from $CKPT_DIR/global_step_<last>/huggingface (run_qwen2_5_vl_7b_sft_then_grpo.sh).
#
#   bash examples/run_qwen2_5_vl_7b_sft.sh
#   LR=2e-5 TOTAL_EPOCHS=2 bash examples/run_qwen2_5_vl_7b_sft.sh optim.lr_scheduler_type=cosine  # + overrides
#   DRY_RUN=1 bash examples/run_qwen2_5_vl_7b_sft.sh     # print + validate, write and start nothing
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=${DEVICE:-cuda}   # cpu: verl's SFT trainer on CPU with the CPU defaults (examples/device.sh; tiny-scale checks)
source "$ROOT/examples/device.sh"   # PY; with DEVICE=cpu the CPU environment and defaults

# --- model, data, run names (all overridable from the environment) ---
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/visurf}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.parquet}          # the RL parquet (one file)
VAL_FILES=${VAL_FILES:-null}                                 # RL parquet for the validation loss, or null
SFT_TRAIN_FILES=${SFT_TRAIN_FILES:-${TRAIN_FILES%.parquet}_sft.parquet}   # converted (made if missing)
if [[ "$VAL_FILES" == null ]]; then SFT_VAL_FILES=${SFT_VAL_FILES:-null}; else
    SFT_VAL_FILES=${SFT_VAL_FILES:-${VAL_FILES%.parquet}_sft.parquet}; fi
PROJECT=${PROJECT:-visurf}
EXP_NAME=${EXP_NAME:-qwen2_5_vl_7b_sft}
CKPT_DIR=${CKPT_DIR:-$ROOT/checkpoints/$PROJECT/$EXP_NAME}
LOGGER=${LOGGER:-"[console]"}
# --- hardware ---
NNODES=${NNODES:-1}
N_GPUS=${N_GPUS:-8}                                          # GPUs per node
NODE_RANK=${NODE_RANK:-0}                                    # multi-node: this node's rank,
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}                        #   rank 0's address
MASTER_PORT=${MASTER_PORT:-29500}
SP_SIZE=${SP_SIZE:-1}                                        # Ulysses sequence parallel size
TOKENS_PER_GPU=${TOKENS_PER_GPU:-16384}                      # dynamic-batch token budget per GPU (>= MAX_LENGTH)
ATTN_IMPL=${ATTN_IMPL:-flash_attention_2}                    # sdpa without flash-attn (+ USE_REMOVE_PADDING=False)
USE_REMOVE_PADDING=${USE_REMOVE_PADDING:-True}
# --- optimisation ---
BATCH=${BATCH:-16}                                           # sequences per step (the RL prompt batch)
LR=${LR:-1e-5}
WEIGHT_DECAY=${WEIGHT_DECAY:-1e-2}
GRAD_CLIP=${GRAD_CLIP:-1.0}
WARMUP_RATIO=${WARMUP_RATIO:-0.03}
MAX_LENGTH=${MAX_LENGTH:-3348}                               # prompt 1300 + response 2048, as the RL runs
TOTAL_EPOCHS=${TOTAL_EPOCHS:-1}
TOTAL_STEPS=${TOTAL_STEPS:-null}                             # null: epochs decide
SAVE_FREQ=${SAVE_FREQ:--1}                                   # -1: only the last step (always saved)


if [[ "$NNODES" == 1 ]]; then
    LAUNCH=(-m torch.distributed.run --standalone --nnodes=1 --nproc-per-node="$N_GPUS")
else
    LAUNCH=(-m torch.distributed.run --nnodes="$NNODES" --node-rank="$NODE_RANK" --nproc-per-node="$N_GPUS"
            --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT")
fi

OVERRIDES=(
    data.train_files="$SFT_TRAIN_FILES"
    data.val_files="$SFT_VAL_FILES"
    data.messages_key=messages
    data.train_batch_size="$BATCH"
    data.use_dynamic_bsz=True
    data.max_token_len_per_gpu="$TOKENS_PER_GPU"
    data.max_length="$MAX_LENGTH"
    data.truncation=error
    data.pad_mode=no_padding
    model.path="$MODEL_PATH"
    model.use_remove_padding="$USE_REMOVE_PADDING"
    model.enable_gradient_checkpointing=True
    +model.override_config.attn_implementation="$ATTN_IMPL"
    engine.strategy=fsdp2
    engine.ulysses_sequence_parallel_size="$SP_SIZE"
    optim.lr="$LR"
    optim.weight_decay="$WEIGHT_DECAY"
    optim.clip_grad="$GRAD_CLIP"
    optim.lr_warmup_steps_ratio="$WARMUP_RATIO"
    "checkpoint.save_contents=[model,optimizer,extra,hf_model]"
    trainer.logger="$LOGGER"
    trainer.project_name="$PROJECT"
    trainer.experiment_name="$EXP_NAME"
    trainer.default_local_dir="$CKPT_DIR"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.total_epochs="$TOTAL_EPOCHS"
    trainer.total_training_steps="$TOTAL_STEPS"
    trainer.save_freq="$SAVE_FREQ"
    trainer.test_freq=-1
    trainer.resume_mode=auto
)
[[ "$DEVICE" == cpu ]] && OVERRIDES+=(trainer.device=cpu)

# RL parquet -> SFT parquet, only when the SFT file is missing or older than its source.
CONVERT=()
add_conversion() {  # $1 = RL parquet, $2 = SFT parquet
    if [[ "$1" == *[\[,]* ]]; then
        echo "error: $1 is a list; convert each file with python -m data_prep.to_sft and set SFT_TRAIN_FILES" >&2
        exit 2
    fi
    if [[ ! -f "$2" || "$1" -nt "$2" ]]; then CONVERT+=("$1" "$2"); fi
}
add_conversion "$TRAIN_FILES" "$SFT_TRAIN_FILES"
[[ "$VAL_FILES" == null ]] || add_conversion "$VAL_FILES" "$SFT_VAL_FILES"

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "DRY_RUN=1 - the commands this script runs (nothing written or started):"
    for ((i = 0; i < ${#CONVERT[@]}; i += 2)); do
        printf '%q -m data_prep.to_sft --in %q --out %q\n' "$PY" "${CONVERT[i]}" "${CONVERT[i+1]}"
    done
    printf '%q' "$PY"
    printf ' %q' "${LAUNCH[@]}" -m verl.trainer.sft_trainer
    printf ' \\\n    %q' "${OVERRIDES[@]}" "$@"
    printf '\n'
    exec "$PY" -m recipe.visurf.dry_run --sft "${OVERRIDES[@]}" "$@"
fi

for ((i = 0; i < ${#CONVERT[@]}; i += 2)); do
    "$PY" -m data_prep.to_sft --in "${CONVERT[i]}" --out "${CONVERT[i+1]}"
done
exec "$PY" "${LAUNCH[@]}" -m verl.trainer.sft_trainer "${OVERRIDES[@]}" "$@"
