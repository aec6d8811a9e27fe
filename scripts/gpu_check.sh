#!/usr/bin/env bash
# The GPU check (issue 22), one command on a CUDA machine: install (make setup), run the tests marked gpu
# (gsplat against the CPU reference rasterizer, every runner in fp16 on the hub-shaped models, the tiny pack on
# CUDA), time FlexEControl against the full copy on SD 1.5's config at 512x512 in fp16, and write one JSON
# report (default bench/results/gpu_check.json; commit it), all in under 8 minutes (bench/gpu_check.py).
#   scripts/gpu_check.sh [--out FILE]
#   scripts/gpu_check.sh --dry-run [--out FILE]   # the same steps on the CPU at toy sizes, nothing installed
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=bench/results/gpu_check.json
dry_run=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=(--dry-run) ;;
    --out) out=$2; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--dry-run] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
install_seconds=0
if [ ${#dry_run[@]} -eq 0 ]; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
    echo "No CUDA GPU on this machine (nvidia-smi fails); run with --dry-run to check the steps on the CPU." >&2
    exit 1
  fi
  started=$(date +%s)
  make --no-print-directory setup
  install_seconds=$(( $(date +%s) - started ))
fi
exec timeout 600 "$PY" bench/gpu_check.py "${dry_run[@]}" --out "$out" --install-seconds "$install_seconds"
