#!/usr/bin/env bash
# The CPU measurements quoted in the issues' closing notes, on pbc128 at 96 px, in one command:
#   EPOCHS=3 SEVERITIES="[3]" bash scripts/measure_pbc128.sh [OUT]
# Trains (same budget for all: EPOCHS epochs, the first head-only for pretrained Lite0, EMA 0.998)
#   lite0_{heavy,pipeline,none}  EfficientNet-Lite0, offline ImageNet weights, staged   (augment comparison)
#   lite0_scratch_heavy          the same network from random init, all layers trained
#   small_cnn_heavy              the small CNN baseline
# then builds the benchmark sets of the test split (Bmk + corruption suite at SEVERITIES) and a seeded
# lab-shift copy, evaluates every model on them, and an ensemble of the three lite0 augment runs.
# Finished steps are reused, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
OUT=${1:-outputs/measure_pbc128}
E=${EPOCHS:-3}
SEV=${SEVERITIES:-"[1,2,3,4,5]"}
QUIET=("~callbacks.progress_bar" "trainer.enable_progress_bar=false")
LITE=(data=pbc128 trainer=cpu "trainer.max_epochs=$E" model=effnet_lite0 model.freeze_epochs=1 model.ema.enabled=true model.ema.decay=0.998)
mkdir -p "$OUT"

train() {  # train NAME overrides...: one run folder per model, skipped when already finished
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] || python train.py "$@" "${QUIET[@]}" hydra.run.dir="$OUT/$name"
}
best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$OUT/$1/summary.json"; }
evaluate() {  # evaluate NAME-OF-EVAL ckpt-spec extra...
  local name=$1 ckpt=$2; shift 2
  [ -f "$OUT/$name/metrics.json" ] || python evaluate.py "ckpt=$ckpt" "$@" hydra.run.dir="$OUT/$name"
}

train lite0_heavy "${LITE[@]}" augment=heavy
train lite0_pipeline "${LITE[@]}" augment=pipeline
train lite0_none "${LITE[@]}" augment=none

[ -f "$OUT/bench/manifest.json" ] || python -m bloodcell.evaluation.benchmark_sets data=pbc128 data.image_size=96 out="$OUT/bench" seed=0 "severities=$SEV"
[ -f "$OUT/labshift/shift.json" ] || python -c "
import sys; from pathlib import Path
from bloodcell.augment.compare import own_shifted_set
print(own_shifted_set(sys.argv[1], Path(sys.argv[2]), 1234))" "$(best lite0_heavy)" "$OUT/labshift"

for m in lite0_heavy lite0_pipeline lite0_none; do
  evaluate "eval_$m" "'$(best $m)'" benchmark_dir="$OUT/bench"
  evaluate "labshift_$m" "'$(best $m)'" data=folder data.root="$OUT/labshift" data.cache_dir="$OUT/cache"
done
evaluate eval_ensemble3 "['$(best lite0_heavy)','$(best lite0_pipeline)','$(best lite0_none)']" benchmark_dir="$OUT/bench"
evaluate labshift_ensemble3 "['$(best lite0_heavy)','$(best lite0_pipeline)','$(best lite0_none)']" data=folder data.root="$OUT/labshift" data.cache_dir="$OUT/cache"

train lite0_scratch_heavy "${LITE[@]}" augment=heavy model.weights_source=null model.freeze=false
train small_cnn_heavy data=pbc128 trainer=cpu "trainer.max_epochs=$E" model=small_cnn augment=heavy
for m in lite0_scratch_heavy small_cnn_heavy; do
  evaluate "eval_$m" "'$(best $m)'" benchmark_dir="$OUT/bench"
  evaluate "labshift_$m" "'$(best $m)'" data=folder data.root="$OUT/labshift" data.cache_dir="$OUT/cache"
done
python scripts/measure_table.py "$OUT"
