"""Cost of an on-device batch pipeline, op by op, against the CPU Albumentations loader it replaces.

    python benchmarks/batch_augment_ops.py [--device cuda] [--batch 256] [--size 96] [--repeats 20] [--loader]
        [hydra overrides, default batch_augment=pipeline]

Per op: ms per batch (device-synchronised around each op, medians over `--repeats` batches after a
warm-up) and the aten calls it dispatches (each a kernel launch on a GPU: the host-side cost);
then the whole pipeline timed as training runs it (one sync per batch at the end) in img/s.
`--loader` also times the training DataLoader with `augment=pipeline` (CPU workers, `data.num_workers`)
on the same data, the path `batch_augment=pipeline` replaces.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from benchmarks._common import compose_train_cfg, median, synchronize  # noqa: E402
from bloodcell.augment.gpu import BatchOp, build_batch_augment  # noqa: E402
from bloodcell.augment.gpu.core import to_unit  # noqa: E402
from bloodcell.reproducibility import seed_global_rngs  # noqa: E402


class CallCount(TorchDispatchMode):
    """Counts aten calls (≈ kernel launches on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def time_it(fn, device: torch.device, repeats: int) -> float:
    """Median ms of fn() with a sync before and after each call."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return median(times)


def batches_from_cache(overrides: list[str], n: int, device: torch.device) -> torch.Tensor:
    """A real uint8 batch of the training split (the cache), on the device."""
    from bloodcell.training import build_datamodule

    cfg = compose_train_cfg(["augment=none", "data.num_workers=0", *overrides])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    images = dm.splits["train"].images()
    idx = torch.randint(0, len(images), (n,)).tolist()
    return torch.from_numpy(images[sorted(idx)]).permute(0, 3, 1, 2).contiguous().to(device)


def loader_img_per_s(overrides: list[str], batches: int) -> float:
    """img/s of the training DataLoader with augment=pipeline on the CPU workers (first 3 batches excluded)."""
    from bloodcell.training import build_datamodule

    dm = build_datamodule(compose_train_cfg(["augment=pipeline", "batch_augment=none", *overrides]))
    dm.prepare_data()
    dm.setup("fit")
    it, images = iter(dm.train_dataloader()), 0
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        images += int(next(it)[1].shape[0])
    return images / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--loader", action="store_true", help="also time the CPU augment=pipeline DataLoader")
    parser.add_argument("--loader-batches", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    overrides = [f"data.image_size={args.size}", f"data.batch_size={args.batch}", *overrides]
    if not any(o.startswith("data=") for o in overrides):
        overrides = ["data=pbc128", *overrides]
    batch_overrides = [o for o in overrides if o.startswith("batch_augment")] or ["batch_augment=pipeline"]
    device = torch.device(args.device)
    pipeline = build_batch_augment(compose_train_cfg(batch_overrides).batch_augment).to(device)
    x = batches_from_cache([o for o in overrides if not o.startswith("batch_augment")], args.batch, device)
    xf = to_unit(x)
    seed_global_rngs(0)
    rows = []
    for op in pipeline:
        run = (lambda op=op: op.run(xf.clone())) if isinstance(op, BatchOp) else (lambda op=op: op(xf))
        run()
        with CallCount() as count:
            run()
        ms = time_it(run, device, args.repeats)
        rows.append({"op": type(op).__name__, "p": getattr(op, "p", None), "ms": ms, "aten_calls": count.calls})
    pipeline(x)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        pipeline(x)
    synchronize(device)
    total_ms = (time.perf_counter() - t0) * 1e3 / args.repeats
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
              "batch": args.batch, "size": args.size, "ops": rows, "pipeline_ms_per_batch": total_ms,
              "pipeline_img_per_s": args.batch / total_ms * 1e3, "aten_calls": sum(r["aten_calls"] for r in rows)}
    if args.loader:
        result["cpu_loader_img_per_s"] = loader_img_per_s(overrides, args.loader_batches)
    print(f"{'op':20s} {'p':>5s} {'ms/batch':>9s} {'aten calls':>10s}")
    for r in rows:
        print(f"{r['op']:20s} {r['p'] if r['p'] is not None else '':>5} {r['ms']:9.2f} {r['aten_calls']:10d}")
    print(f"pipeline: {total_ms:.2f} ms per batch of {args.batch} at {args.size} px = {result['pipeline_img_per_s']:.0f} img/s "
          f"on {result['device']} ({result['aten_calls']} aten calls)")
    if args.loader:
        print(f"CPU loader, augment=pipeline: {result['cpu_loader_img_per_s']:.0f} img/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
