#!/usr/bin/env bash
# `make tiny-flexecontrol`: FlexEControl's tiny weights over shapes-sd, then the same training (steps, batch, data,
# seeds) for the full copy, which bench/flexecontrol.py compares it with, and (3000 steps) without L_ca / L_mask.
# FlexEControl and the full copy train 9000 steps as three resumed runs of 3000 (seeds 0, 1, 2: each run draws new
# training maps); two one-thread runs at a time, one per core of the 2-core CPU this is sized for: about 27 min a
# run here, 1 h 55 min in all. Usage: train_flexecontrol.sh PYTHON OUT
set -euo pipefail
PY=${1:?python}; OUT=${2:?output folder}
run() {  # run NAME FOLDER ARGS...: 3000 steps with checkpoints under runs/flexecontrol/NAME (resume with --resume)
  local name=$1 folder=$2; shift 2
  WORLDSTUDIO_THREADS=1 "$PY" -m pipelines.flexecontrol --steps 3000 --batch-size 8 --scenes 4000 \
    --drawn-probability 0.5 --out "$folder" --checkpoints "runs/flexecontrol/$name" "$@"
}
chain() {  # chain NAME FOLDER ARGS...: three runs of 3000 steps, each resumed from the one before
  local name=$1 folder=$2; shift 2
  run "$name-1" "runs/flexecontrol/$name-1/weights" --seed 0 "$@"
  run "$name-2" "runs/flexecontrol/$name-2/weights" --seed 1 --resume "runs/flexecontrol/$name-1/weights" "$@"
  run "$name" "$folder" --seed 2 --resume "runs/flexecontrol/$name-2/weights" "$@"
}
chain flexecontrol "$OUT" & a=$!
chain full "$OUT/equal-training/full" --method full & b=$!
wait "$a"; wait "$b"
run without-ca "$OUT/equal-training/without-ca" --seed 0 --lambda-ca 0 & a=$!
run without-mask "$OUT/equal-training/without-mask" --seed 0 --lambda-mask 0 & b=$!
wait "$a"; wait "$b"
