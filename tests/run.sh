#!/usr/bin/env bash
# The project's test command (README, CI): set up .venv if needed, then run the whole pytest suite.
#   bash tests/run.sh                 # everything (unit + end-to-end verl runs on CPU)
#   bash tests/run.sh -m "not e2e"    # extra args go to pytest
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh" || { echo "tests/run.sh: environment set-up failed" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider --durations=15 tests "$@"
