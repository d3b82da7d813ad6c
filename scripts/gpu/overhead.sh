#!/usr/bin/env bash
# GPU call 1 of issue 13 (~4 min on one H100/H200): framework overhead and the on-device pipeline's cost.
#   device tool: command "bash scripts/gpu/overhead.sh", carry [".whl", ".devdata"], timeout_s 540
# Writes to $OUT: device.txt; overhead.json/.log (plain loop vs Lightning, ≥ 200 timed steps, effnet_lite0 + resnet50,
# batch 256, bf16, channels_last, the issue's batch_augment=basic setting); pipeline.json/.log (effnet_lite0 with
# batch_augment=pipeline: framework vs model-only without batch ops); ops.json/.log (the pipeline op by op + the CPU
# augment=pipeline loader); syncs.log (torch.cuda.set_sync_debug_mode over real training steps). A failing step is
# logged and the next one still runs.
source "$(dirname "$0")/setup.sh"
COMMON=(trainer=gpu data=pbc128 augment=none data.pin_memory=true data.num_workers=8 channels_last=true data.batch_size=256
        model.pretrained=false model.weights_source=null "~callbacks.progress_bar" trainer.enable_progress_bar=false)
step() {  # step NAME LINES command...: full output in $W, its last LINES lines in $OUT/NAME.log
  local name=$1 lines=$2; shift 2
  echo "== $name ($(date +%T))"
  "$@" > "$W/$name.full.log" 2>&1 || echo "FAILED (exit $?)" >> "$W/$name.full.log"
  tail -n "$lines" "$W/$name.full.log" | tee "$OUT/$name.log"
}
step overhead 8 python3 benchmarks/train_throughput.py --models effnet_lite0,resnet50 --steps 300 --warmup 20 --repeats 2 \
  "${COMMON[@]}" batch_augment=basic --json "$OUT/overhead.json"
step pipeline 6 python3 benchmarks/train_throughput.py --models effnet_lite0 --steps 300 --warmup 20 --repeats 1 \
  "${COMMON[@]}" batch_augment=pipeline --json "$OUT/pipeline.json"
step ops 24 python3 benchmarks/batch_augment_ops.py --device cuda --batch 256 --size 96 --loader data.num_workers=15 \
  --json "$OUT/ops.json"
step syncs 40 python3 benchmarks/syncs.py --cuda --steps 6 data=pbc128 model=effnet_lite0 model.weights_source=null trainer=gpu \
  batch_augment=pipeline augment=none model.ema.enabled=true data.batch_size=256 data.num_workers=8 \
  callbacks.progress_bar.min_interval_s=3600
echo "== done ($(date +%T))"
