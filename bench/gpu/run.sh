#!/usr/bin/env bash
# The GPU check as one command on the GPU machine (no network): install the carried wheels,
# compile our extension in place, measure. Usage: bash bench/gpu/run.sh BUNDLE OUT [measure flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-.gpu_bundle}
OUT=${2:-gpu_results}
shift 2 || true
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
    "$BUNDLE"/wheels/*.whl
export PYTHONPATH=/tmp/gpu_check_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" || true
exec python3 bench/gpu/check.py measure --bundle "$BUNDLE" --out "$OUT" --build "$@"
