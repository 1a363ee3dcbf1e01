#!/usr/bin/env bash
# Set up ./.venv (first run: ~3 min) and run the main job on embedded defaults (local files only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m workflows.demo "$@"
