#!/usr/bin/env bash
# Robustness summary (val acc, test acc, Bmk acc, mean corruption acc) of a single model vs an
# ensemble of three, on pbc128. Every step is an ordinary command; override by environment:
#   EPOCHS=30 bash benchmarks/robustness_pbc128.sh                         # the real measurement
#   DATA=sample EPOCHS=1 EXTRA="trainer.limit_train_batches=2" BENCH_ARGS="corruptions=[jpeg,bubbles] severities=[1,5]" \
#     OUT=/tmp/rob bash benchmarks/robustness_pbc128.sh                    # a 2-minute dry run
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
DATA=${DATA:-pbc128}
EPOCHS=${EPOCHS:-30}
OUT=${OUT:-outputs/robustness_${DATA}}
BENCH=${BENCH:-$OUT/bench}
EXTRA=${EXTRA:-}
BENCH_ARGS=${BENCH_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-calibrate=true}
M1=${M1:-"model=effnet_lite0 seed=1"}
M2=${M2:-"model=effnet_lite0 seed=2 augment=a1"}
M3=${M3:-"model=effnet_lite0 seed=3 data.image_size=128"}

train() { local name=$1; shift; python train.py data=$DATA trainer.max_epochs=$EPOCHS hydra.run.dir=$OUT/$name "$@" $EXTRA; }
best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$OUT/$1/summary.json"; }

train m1 $M1
train m2 $M2
train m3 $M3
# the test split of the same source and split settings, stored at 128 px (members resize to their own size)
python -m bloodcell.tools.benchmark_sets data=$DATA data.image_size=128 out=$BENCH seed=0 $BENCH_ARGS
# quote checkpoint paths for Hydra as 'PATH' (safe for any path, e.g. one holding '=')
python evaluate.py ckpt="'$(best m1)'" benchmark_dir=$BENCH $EVAL_ARGS hydra.run.dir=$OUT/eval_single
python evaluate.py "ckpt=['$(best m1)','$(best m2)','$(best m3)']" benchmark_dir=$BENCH $EVAL_ARGS hydra.run.dir=$OUT/eval_ensemble3
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'':<12}{'val acc':>9}{'test acc':>10}{'Bmk acc':>9}{'mean corr':>11}")
for name in ("eval_single", "eval_ensemble3"):
    s = json.load(open(f"{out}/{name}/robustness.json"))["summary"]
    print(f"{name:<16}" + "".join(f"{s[k]:>{w}.4f}" for k, w in (("val_acc", 9), ("test_acc", 10), ("bmk_acc", 9), ("mean_corruption_acc", 11))))
PY
