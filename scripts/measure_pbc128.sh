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
OUT=${1:-outputs/measure_pbc128}
E=${EPOCHS:-3}
SEV=${SEVERITIES:-"[1,2,3,4,5]"}
source "$(dirname "$0")/measure_common.sh"
LITE=(data=pbc128 trainer=cpu "trainer.max_epochs=$E" model=effnet_lite0 model.freeze_epochs=1 model.ema.enabled=true model.ema.decay=0.998)

train lite0_heavy "${LITE[@]}" augment=heavy
train lite0_pipeline "${LITE[@]}" augment=pipeline
train lite0_none "${LITE[@]}" augment=none

build_shifted_sets lite0_heavy

for m in lite0_heavy lite0_pipeline lite0_none; do
  evaluate_shifted "$m" "'$(best $m)'"
done
evaluate_shifted ensemble3 "['$(best lite0_heavy)','$(best lite0_pipeline)','$(best lite0_none)']"

train lite0_scratch_heavy "${LITE[@]}" augment=heavy model.weights_source=null model.freeze=false
train small_cnn_heavy data=pbc128 trainer=cpu "trainer.max_epochs=$E" model=small_cnn augment=heavy
for m in lite0_scratch_heavy small_cnn_heavy; do
  evaluate_shifted "$m" "'$(best $m)'"
done
python scripts/measure_table.py "$OUT"
