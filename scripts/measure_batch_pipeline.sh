#!/usr/bin/env bash
# Issue 13 parity check: does batch_augment=pipeline (the domain pipeline on the training batch, on the device) train
# as robust a model as augment=pipeline (Albumentations on CPU workers)? Same network, epochs, seed and schedule:
#   bash scripts/measure_batch_pipeline.sh [OUT]        (2 CPU cores: ~20 min per model; finished steps are reused)
#   EPOCHS=8 SEVERITIES="[3]" bash scripts/measure_batch_pipeline.sh outputs/measure_batch_pipeline trainer=gpu   # on a GPU
# Trains experiment=pbc128_lite0_staged with
#   lite0_cpu_pipeline    augment=pipeline                          (the CPU recipe, the reference)
#   lite0_batch_pipeline  augment=none batch_augment=pipeline      (the on-device recipe)
# evaluates both on the clean test split, the benchmark sets (Bmk + corruptions at SEVERITIES) and the seeded lab-shift
# copy of the test split (scripts/measure_common.sh), and writes OUT/results.md. Parity: Bmk and labshift within 1–2
# points. Cross-lab sets, where present: CROSSLAB="DIR ..." evaluates each folder (data=folder) as crosslab_<name>_<model>.
set -euo pipefail
OUT=${1:-outputs/measure_batch_pipeline}
shift || true
SEV=${SEVERITIES:-"[3]"}
E=${EPOCHS:-8}
source "$(dirname "$0")/measure_common.sh"
BASE=(experiment=pbc128_lite0_staged "trainer.max_epochs=$E" trainer.max_time=null seed=42 "$@")

train lite0_cpu_pipeline "${BASE[@]}" augment=pipeline
train lite0_batch_pipeline "${BASE[@]}" augment=none batch_augment=pipeline

build_shifted_sets lite0_cpu_pipeline
for m in lite0_cpu_pipeline lite0_batch_pipeline; do
  evaluate_shifted "$m" "'$(best "$m")'"
  for dir in ${CROSSLAB:-}; do
    evaluate "crosslab_$(basename "$dir")_$m" "'$(best "$m")'" data=folder data.root="$dir" data.cache_dir="$OUT/cache"
  done
done
python scripts/measure_table.py "$OUT"
