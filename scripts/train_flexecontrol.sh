#!/usr/bin/env bash
# `make tiny-flexecontrol`: FlexEControl's tiny weights over shapes-sd, then the same training (steps, batch, data,
# seed) for the full copy and without L_ca / L_mask, which bench/flexecontrol.py compares. Two one-thread runs
# at a time (one per core of the 2-core CPU this is sized for; ~70 min in all). Usage: train_flexecontrol.sh PYTHON OUT
set -euo pipefail
PY=${1:?python}; OUT=${2:?output folder}
run() {  # run NAME FOLDER ARGS...: one training with checkpoints under runs/flexecontrol/NAME (resume with --resume)
  local name=$1 folder=$2; shift 2
  WORLDSTUDIO_THREADS=1 "$PY" -m pipelines.flexecontrol --steps 3000 --batch-size 8 --scenes 4000 --seed 0 \
    --drawn-probability 0.5 --out "$folder" --checkpoints "runs/flexecontrol/$name" "$@"
}
run flexecontrol "$OUT" & a=$!
run full "$OUT/equal-training/full" --method full & b=$!
wait "$a"; wait "$b"
run without-ca "$OUT/equal-training/without-ca" --lambda-ca 0 & a=$!
run without-mask "$OUT/equal-training/without-mask" --lambda-mask 0 & b=$!
wait "$a"; wait "$b"
