#!/usr/bin/env bash
# Create/refresh the project's virtualenv at <repo>/.venv (idempotent; seconds when up to date).
# Usage: bash scripts/setup_venv.sh            (CPU set: requirements.txt)
#        VISURF_REQUIREMENTS=requirements-gpu.txt bash scripts/setup_venv.sh   (GPU set)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VISURF_VENV:-$ROOT/.venv}"
REQ="${VISURF_REQUIREMENTS:-$ROOT/requirements.txt}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.visurf-installed"
want="$(cat "$REQ" "$ROOT/scripts/setup_venv.sh" "$ROOT/scripts/fix_torchvision_cpu.py" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing into $VENV (first time takes a few minutes)" >&2
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if [ "$REQ" = "$ROOT/requirements.txt" ]; then
  # torch first, from the CPU wheel, so no later requirement can resolve to a CUDA build
  "${PIP[@]}" "torch==2.13.0"
fi
"${PIP[@]}" -r "$REQ"
# the repo root on sys.path of every process of the venv (driver and ray workers)
echo "$ROOT" > "$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/visurf_repo.pth"
"$VENV/bin/python" "$ROOT/scripts/fix_torchvision_cpu.py"
echo "$want" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - t0 ))s; venv $(du -sh "$VENV" | cut -f1)" >&2
