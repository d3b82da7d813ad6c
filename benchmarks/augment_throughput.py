"""Augmentation throughput per core, per augment config, at 96 px (a benchmark, not a test).

    python benchmarks/augment_throughput.py [--images 400] [--configs pipeline heavy] [--root DIR]

"decode excluded": transform only, on images already decoded and resized (what training does,
reading the uint8 cache). "decode included": JPEG read + decode + resize + transform per image,
from the pbc128 folder (or data/sample when absent). Single process with OpenCV/BLAS threads at 1;
img/s per core = images / CPU seconds of this process, so a busy shared machine does not count
against it (wall-clock img/s is printed too). Target (issue 3): pipeline ≥ 500 img/s per core.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bloodcell.augment import build_train_transform  # noqa: E402
from bloodcell.config import compose  # noqa: E402
from bloodcell.data.images import read_image, resize_image  # noqa: E402


def jpeg_files(root: Path, n: int, seed: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images under {root}")
    rng = np.random.default_rng(seed)
    return [files[i] for i in rng.choice(len(files), min(n, len(files)), replace=len(files) < n)]


def measure(fn, items) -> tuple[float, float]:
    """(img/s per CPU second, img/s wall) of fn over items."""
    c0, w0 = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return len(items) / max(cpu, 1e-9), len(items) / max(wall, 1e-9)


def main() -> None:
    configs_all = sorted(p.stem for p in (ROOT / "conf" / "augment").glob("*.yaml") if not p.stem.startswith("_"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--configs", nargs="*", default=configs_all)
    default_root = Path(os.environ.get("BLOODCELL_PBC128", ROOT.parent / "shared" / "data" / "pbc128"))
    parser.add_argument("--root", type=Path, default=default_root if default_root.is_dir() else ROOT / "data" / "sample")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    files = jpeg_files(args.root, args.images, seed=0)
    decoded = [resize_image(read_image(f), args.size) for f in files]
    print(f"{len(files)} images from {args.root}, {args.size} px, 1 thread; img/s per core = images / process CPU seconds")
    print(f"{'augment':<12} {'no decode/core':>15} {'no decode/wall':>15} {'decode/core':>12} {'decode/wall':>12}")
    rows = []
    for name in args.configs:
        cfg = compose("train", [f"augment={name}", "data=sample", "paths.output_dir=/tmp"])
        transform = build_train_transform(cfg.augment, seed=0)
        apply = (lambda img: img) if transform is None else (lambda img: transform(image=img)["image"])
        apply(decoded[0].copy())  # warm-up (imports, LUT caches)
        core, wall = measure(lambda img: apply(img.copy()), decoded)
        dcore, dwall = measure(lambda f: apply(resize_image(read_image(f), args.size)), files)
        rows.append({"augment": name, "img_s_per_core": round(core), "img_s_wall": round(wall),
                     "decode_img_s_per_core": round(dcore), "decode_img_s_wall": round(dwall)})
        print(f"{name:<12} {core:>15.0f} {wall:>15.0f} {dcore:>12.0f} {dwall:>12.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"images": len(files), "size": args.size, "root": str(args.root), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
