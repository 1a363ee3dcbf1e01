#!/usr/bin/env bash
# Create (or reuse) ./.venv with every pinned dependency and the project installed editable.
# torch goes in first from its CPU wheel: a bare `torch` requirement would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.bootstrap-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
[ -f "$stamp" ] && exit 0
echo "bootstrap: installing into ./.venv (first time: ~3 min; log: .venv/bootstrap.log)" >&2
[ -d .venv ] || "$PY" -m venv .venv
log=.venv/bootstrap.log
{
  .venv/bin/python -m pip install --upgrade pip
  .venv/bin/python -m pip install torch==2.13.0
  .venv/bin/python -m pip install -r requirements.txt
  .venv/bin/python -m pip install --no-deps -e .
} >"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "bootstrap: failed, see $log" >&2; exit 1; }
rm -f .venv/.bootstrap-*
touch "$stamp"
