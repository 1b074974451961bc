#!/usr/bin/env bash
# GPU check (under 5 minutes): one epoch of the default LSTM on the CPU and on CUDA (fp32 and
# mixed precision) on 20k demo reviews, then CUDA-vs-CPU prediction agreement.
# Usage: benchmarks/gpu_check.sh [--corpus-dir DIR] [--rows N] ...   (see gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 290 "$PY" benchmarks/gpu_check.py "$@"
