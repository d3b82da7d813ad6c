#!/usr/bin/env bash
# Same-budget comparison of augment=none, heavy, pipeline on pbc128: clean test split vs a seeded
# lab-shift copy of the test split (+ any folders given in SHIFTED, e.g. the evaluation issue's benchmark sets).
#   scripts/compare_augment.sh [OUT_DIR] [extra train.py overrides...]
#   EPOCHS=30 MODEL=effnet_lite0 SHIFTED="/path/set1 /path/set2" scripts/compare_augment.sh outputs/compare_augment trainer=gpu
# Tiny smoke check: EPOCHS=1 MODEL=small_cnn scripts/compare_augment.sh /tmp/cmp trainer.limit_train_batches=2 trainer.limit_val_batches=2
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
OUT=${1:-outputs/compare_augment}
shift || true
SHIFT_ARGS=()
if [ -n "${SHIFTED:-}" ]; then SHIFT_ARGS=(--shifted ${SHIFTED}); fi
exec python -m bloodcell.tools.compare --out "$OUT" --augments none heavy pipeline "${SHIFT_ARGS[@]}" -- \
  data=pbc128 model="${MODEL:-effnet_lite0}" seed="${SEED:-42}" trainer.max_epochs="${EPOCHS:-20}" "$@"
