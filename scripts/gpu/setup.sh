# Sourced first by every scripts/gpu/*.sh on the GPU machine (bare each call): install the carried wheels into a temp
# folder, unpack the PBC images, point bloodcell at them. Sets W (work folder) and OUT (results; the device tool's $OUT,
# or outputs/gpu/<script> when run elsewhere). Needs .whl/ and .devdata/ from scripts/gpu/prepare.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
W=$(mktemp -d)
OUT=${OUT:-outputs/gpu/$(basename "$0" .sh)}
mkdir -p "$OUT"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" .whl/*.whl
python3 -m zipfile -e .devdata/pbc96.zip "$W/data"
export PYTHONPATH="$W/site:$PWD/.devdata/weights:$PWD" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 BLOODCELL_PBC128="$W/data/pbc96" BLOODCELL_CACHE="$W/cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, lightning, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__, 'timm', timm.__version__)" | tee -a "$OUT/device.txt"
echo "setup: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/device.txt"
