#!/usr/bin/env bash
# ViSurf on CPU, end to end, in a few minutes: a tiny random Qwen2.5-VL built offline, a synthetic
# grounding parquet, the real verl 0.9.1 trainer through `recipe.visurf.main_visurf`, then a table of
# the per-step `visurf/` and reward metrics. Sets up .venv on first use (idempotent).
#
#   bash examples/run_tiny_visurf_cpu.sh                      # defaults below
#   STEPS=10 G=4 bash examples/run_tiny_visurf_cpu.sh         # variables are overridable
#   bash examples/run_tiny_visurf_cpu.sh visurf.enable=False  # extra args = verl/Hydra overrides (here: GRPO)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OUT=${OUT:-$ROOT/outputs/tiny_visurf_cpu}   # model, data, checkpoints, logs
G=${G:-2}                                   # sampled rollouts per prompt (the GT makes G+1)
PROMPTS=${PROMPTS:-4}                       # prompts per step (data.train_batch_size)
STEPS=${STEPS:-4}                           # training steps
N_TRAIN=${N_TRAIN:-32}                      # synthetic training rows
IMAGE_SIZE=${IMAGE_SIZE:-112}               # synthetic image side (labels are always in the 840 frame)
RESP_LEN=${RESP_LEN:-160}                   # max response tokens (the GT answer must fit, with EOS)
LR=${LR:-1e-4}

bash "$ROOT/scripts/setup_venv.sh"
PY="$ROOT/.venv/bin/python"
export VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=verl_ext.cpu VERL_ENGINE_DEVICE=cuda HF_HUB_OFFLINE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$OUT/data"
"$PY" -m verl_ext.tiny --out "$OUT/model" | tail -n 1
{ "$PY" -m data_prep.synthetic --task grounding --n "$N_TRAIN" --seed 0 --image-size "$IMAGE_SIZE" \
    --out "$OUT/data/train.parquet" &&
  "$PY" -m data_prep.synthetic --task grounding --n "$PROMPTS" --seed 1 --image-size "$IMAGE_SIZE" --split val \
    --out "$OUT/data/val.parquet"; } > "$OUT/data/prep.log" 2>&1 || { cat "$OUT/data/prep.log" >&2; exit 1; }
echo "data: $OUT/data/{train,val}.parquet"

export VERL_FILE_LOGGER_PATH="$OUT/metrics.jsonl"
rm -f "$VERL_FILE_LOGGER_PATH"
echo "training ViSurf through verl on CPU ($STEPS steps, G=$G, $PROMPTS prompts/step); log: $OUT/train.log"
t0=$(date +%s)
cd "$OUT"
if ! "$PY" -m recipe.visurf.main_visurf \
    data.train_files="$OUT/data/train.parquet" \
    data.val_files="$OUT/data/val.parquet" \
    data.train_batch_size="$PROMPTS" \
    data.max_prompt_length=512 \
    data.max_response_length="$RESP_LEN" \
    data.dataloader_num_workers=0 \
    actor_rollout_ref.model.path="$OUT/model" \
    actor_rollout_ref.rollout.n="$G" \
    actor_rollout_ref.actor.optim.lr="$LR" \
    actor_rollout_ref.actor.ppo_mini_batch_size="$PROMPTS" \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$PROMPTS" \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$PROMPTS" \
    trainer.logger="[console,file]" \
    trainer.project_name=visurf_tiny_cpu \
    trainer.experiment_name=visurf \
    trainer.val_before_train=False \
    trainer.test_freq=-1 \
    trainer.save_freq=-1 \
    trainer.total_epochs=100 \
    trainer.total_training_steps="$STEPS" \
    trainer.default_local_dir="$OUT/checkpoints" \
    "$@" > "$OUT/train.log" 2>&1; then
  echo "training failed; last lines of $OUT/train.log:" >&2
  tail -n 40 "$OUT/train.log" >&2
  exit 1
fi
echo "trained $STEPS steps in $(( $(date +%s) - t0 ))s"
"$PY" -m recipe.visurf.summary "$VERL_FILE_LOGGER_PATH"
