#!/usr/bin/env bash
# Exact-resume check on real data: uninterrupted run vs. a run killed in epoch 1 and resumed with ckpt_path=last.
# usage: scripts/resume_check.sh [extra train.py overrides...]   e.g. data=pbc128 model=effnet_lite0 trainer.max_epochs=3
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=outputs/resume_check/$(date +%Y%m%d_%H%M%S)
COMMON=(test=false evaluate=false "$@")
python train.py "${COMMON[@]}" hydra.run.dir="$OUT/straight"
# simulated kill in the middle of epoch 1 (a test callback raises; the traceback is expected)
python train.py "${COMMON[@]}" hydra.run.dir="$OUT/resumed" +callbacks.crash._target_=tests.test_reliability.CrashAfterFirstEpoch 2>"$OUT.crash.log" \
  && { echo "the crash callback did not fire (max_epochs < 2?)"; exit 1; }
python train.py "${COMMON[@]}" hydra.run.dir="$OUT/resumed" ckpt_path=last
python scripts/compare_runs.py "$OUT/straight" "$OUT/resumed"
