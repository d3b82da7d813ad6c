# Shared steps of the pbc128 measurement drivers (measure_pbc128.sh, measure_transfer.sh); source it after setting
# OUT (the output folder) and SEV (benchmark severities). Every step is skipped when its result already exists,
# so a driver can be re-run after an interruption.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NO_ALBUMENTATIONS_UPDATE=1
QUIET=("~callbacks.progress_bar" "trainer.enable_progress_bar=false")
mkdir -p "$OUT"

train() {  # train NAME overrides...: one run folder per model
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] || python train.py "$@" "${QUIET[@]}" hydra.run.dir="$OUT/$name"
}
best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$OUT/$1/summary.json"; }
evaluate() {  # evaluate NAME-OF-EVAL ckpt-spec extra...
  local name=$1 ckpt=$2; shift 2
  [ -f "$OUT/$name/metrics.json" ] || python evaluate.py "ckpt=$ckpt" "$@" hydra.run.dir="$OUT/$name"
}
build_shifted_sets() {  # build_shifted_sets RUN: the test split's benchmark sets (Bmk + corruptions) and lab-shift copy
  [ -f "$OUT/bench/manifest.json" ] || python -m bloodcell.tools.benchmark_sets data=pbc128 data.image_size=96 \
    out="$OUT/bench" seed=0 "severities=$SEV"
  [ -f "$OUT/labshift/shift.json" ] || python -c "
import sys; from pathlib import Path
from bloodcell.evaluation.compare import own_shifted_set
print(own_shifted_set(sys.argv[1], Path(sys.argv[2]), 1234))" "$(best "$1")" "$OUT/labshift"
}
evaluate_shifted() {  # evaluate_shifted NAME ckpt-spec: OUT/eval_NAME (test + benchmark sets) and OUT/labshift_NAME
  evaluate "eval_$1" "$2" benchmark_dir="$OUT/bench"
  evaluate "labshift_$1" "$2" data=folder data.root="$OUT/labshift" data.cache_dir="$OUT/cache"
}
