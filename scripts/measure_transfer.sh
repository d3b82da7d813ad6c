#!/usr/bin/env bash
# Issue 5's measurement on pbc128 at 96 px, each model within the same 30-minute CPU budget (trainer.max_time 28 min):
#   bash scripts/measure_transfer.sh [OUT]          (about 90 minutes on 2 CPU cores; finished steps are reused)
# Trains experiment=pbc128_lite0_staged (offline ImageNet weights, staged), pbc128_lite0_scratch and
# pbc128_small_cnn (all with the default augment=basic), plus the staged run with augment=pipeline; evaluates each best checkpoint on the clean test split, on the benchmark sets (Bmk + the
# corruption suite at SEVERITIES) and on the seeded lab-shift copy of the test split, then writes OUT/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
OUT=${1:-outputs/measure_transfer}
SEV=${SEVERITIES:-"[3]"}
QUIET=("~callbacks.progress_bar" "trainer.enable_progress_bar=false")
MODELS=(lite0_staged lite0_scratch small_cnn lite0_staged_pipeline)
mkdir -p "$OUT"

train() {  # train NAME overrides...: one run folder per model, skipped when already finished
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] || python train.py "$@" "${QUIET[@]}" hydra.run.dir="$OUT/$name"
}

best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$OUT/$1/summary.json"; }
train lite0_staged experiment=pbc128_lite0_staged
train lite0_scratch experiment=pbc128_lite0_scratch
train small_cnn experiment=pbc128_small_cnn
train lite0_staged_pipeline experiment=pbc128_lite0_staged augment=pipeline

[ -f "$OUT/bench/manifest.json" ] || python -m bloodcell.evaluation.benchmark_sets data=pbc128 data.image_size=96 out="$OUT/bench" seed=0 "severities=$SEV"
[ -f "$OUT/labshift/shift.json" ] || python -c "
import sys; from pathlib import Path
from bloodcell.augment.compare import own_shifted_set
print(own_shifted_set(sys.argv[1], Path(sys.argv[2]), 1234))" "$(best lite0_staged)" "$OUT/labshift"

for m in "${MODELS[@]}"; do
  [ -f "$OUT/eval_$m/metrics.json" ] || python evaluate.py "ckpt='$(best "$m")'" benchmark_dir="$OUT/bench" hydra.run.dir="$OUT/eval_$m"
  [ -f "$OUT/labshift_$m/metrics.json" ] || python evaluate.py "ckpt='$(best "$m")'" data=folder data.root="$OUT/labshift" \
    data.cache_dir="$OUT/cache" hydra.run.dir="$OUT/labshift_$m"
done
python scripts/measure_table.py "$OUT"
