#!/usr/bin/env bash
# FlexEControl's tiny weights over shapes-sd and the same training (steps, batch, data, seeds) for what
# bench/flexecontrol.py compares them with. Every model trains 9000 steps as three resumed runs of 3000 (seeds 0, 1,
# 2: each run draws new training maps); two one-thread runs at a time, one per core of the 2-core CPU this is sized
# for. PART "weights" (`make tiny-flexecontrol`): FlexEControl and the full copy; PART "ablations"
# (`make tiny-flexecontrol-ablations`): without L_ca and without L_mask. Usage: train_flexecontrol.sh PYTHON OUT PART
set -euo pipefail
PY=${1:?python}; OUT=${2:?output folder}; PART=${3:?weights or ablations}
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
case "$PART" in
  weights)
    chain flexecontrol "$OUT" & a=$!
    chain full "$OUT/equal-training/full" --method full & b=$! ;;
  ablations)
    chain without-ca "$OUT/equal-training/without-ca" --lambda-ca 0 & a=$!
    chain without-mask "$OUT/equal-training/without-mask" --lambda-mask 0 & b=$! ;;
  *) echo "PART must be weights or ablations, got $PART" >&2; exit 2 ;;
esac
wait "$a"; wait "$b"
