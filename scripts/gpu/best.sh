#!/usr/bin/env bash
# GPU call 2 of issue 13 (≤ 10 min on one H100/H200): experiment=gpu_best, trained and evaluated on the clean test split.
#   device tool: command "bash scripts/gpu/best.sh", carry [".whl", ".devdata"], timeout_s 600
# Writes to $OUT: device.txt, train.log (tail), summary.json, metrics.csv (per-epoch log), eval_metrics.json.
# Extra train.py overrides may follow (e.g. trainer.max_epochs=20 on a slower card).
source "$(dirname "$0")/setup.sh"
t0=$(date +%s)
python3 train.py experiment=gpu_best "~callbacks.progress_bar" trainer.enable_progress_bar=false hydra.run.dir="$W/run" "$@" \
  > "$W/train.log" 2>&1 || { tail -60 "$W/train.log" > "$OUT/train.log"; exit 1; }
echo "wall: $(( $(date +%s) - t0 )) s" >> "$W/train.log"
tail -60 "$W/train.log" > "$OUT/train.log"
cp "$W/run/summary.json" "$OUT/summary.json"
cp "$W/run/logs/metrics.csv" "$OUT/metrics.csv" 2>/dev/null || true
cp "$W/run/eval/metrics.json" "$OUT/eval_metrics.json" 2>/dev/null || true
python3 - "$OUT/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s.get("metrics", {})
print(f"epochs {s['epochs']}, fit {s['fit_seconds']} s ({s['seconds_per_epoch']} s/epoch); "
      f"test/acc {m.get('test/acc', float('nan')):.4f}, test/bal_acc {m.get('test/bal_acc', float('nan')):.4f} (target ≥ 0.990)")
PY
