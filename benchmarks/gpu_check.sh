#!/usr/bin/env bash
# One prepared check of the CUDA paths; prints one table (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine: < 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: every section on the CPU, tiny sizes
#
# Needs only this repository and its venv (.venv, or PYTHON=/path/to/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "error: no python at $PY (make the venv first, or set PYTHON)" >&2
  exit 2
fi
echo "== $(date -u +%FT%TZ) $(hostname) ==" >&2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader >&2 || true
# 470 s hard limit: the table must come back inside 8 minutes
exec timeout --signal=INT 470 "$PY" benchmarks/gpu_check.py "$@"
