#!/usr/bin/env bash
# Set up ./.venv (first run: ~3 min) and run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest -q "$@"
