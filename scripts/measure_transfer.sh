#!/usr/bin/env bash
# Issue 5's measurement on pbc128 at 96 px, each model within the same 30-minute CPU budget (trainer.max_time 28 min):
#   bash scripts/measure_transfer.sh [OUT]          (about 90 minutes on 2 CPU cores; finished steps are reused)
# Trains experiment=pbc128_lite0_staged (offline ImageNet weights, staged), pbc128_lite0_scratch and
# pbc128_small_cnn (all with the default augment=basic), plus the staged run with augment=pipeline; evaluates each
# best checkpoint on the clean test split, on the benchmark sets (Bmk + the corruption suite at SEVERITIES) and on
# the seeded lab-shift copy of the test split, then writes OUT/results.md and OUT/val_curves.png.
set -euo pipefail
OUT=${1:-outputs/measure_transfer}
SEV=${SEVERITIES:-"[3]"}
source "$(dirname "$0")/measure_common.sh"

train lite0_staged experiment=pbc128_lite0_staged
train lite0_scratch experiment=pbc128_lite0_scratch
train small_cnn experiment=pbc128_small_cnn
train lite0_staged_pipeline experiment=pbc128_lite0_staged augment=pipeline

build_shifted_sets lite0_staged
for m in lite0_staged lite0_scratch small_cnn lite0_staged_pipeline; do
  evaluate_shifted "$m" "'$(best "$m")'"
done
python scripts/measure_table.py "$OUT"
