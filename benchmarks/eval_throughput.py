"""Throughput of evaluate's inference path vs a plain torch.no_grad() loop, same model, same data, one run.

    python benchmarks/eval_throughput.py --ckpt outputs/train/<run>/checkpoints/last.ckpt [--split test --repeats 5 --device auto]

"evaluate path" = bloodcell.evaluation.inference.ensemble_predict with one member (data module from the
checkpoint, cached split, predict_probs with softmax to numpy, id alignment). "plain" = a bare loop
over a DataLoader of the same cached split calling the same module. Runs alternate; the best of
`--repeats` each is compared. Target: ratio ≥ 0.97.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bloodcell.checkpoint import load_module  # noqa: E402
from bloodcell.evaluation.inference import InferenceSettings, Member, datamodule_for, ensemble_predict, resolve_device  # noqa: E402


def plain_loop(module, loader, device) -> int:
    n = 0
    module = module.to(device).eval()
    with torch.no_grad():
        for x, _ in loader:
            probs = module(x.to(device, non_blocking=True)).float().softmax(dim=-1).cpu()
            n += len(probs)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=2)
    args = ap.parse_args()

    device = resolve_device(args.device)
    module = load_module(args.ckpt)
    overrides = {"num_workers": args.num_workers, "eval_batch_size": args.batch_size}
    dm, _ = datamodule_for(module, None, overrides)
    n = len(dm.dataset(args.split))
    member = [Member(args.ckpt, module)]
    how = InferenceSettings(device, loader_overrides=overrides, progress=False)
    ensemble_predict(member, None, args.split, how)  # warm-up: caches, page cache, kernels
    plain_loop(module, dm.predict_loader(args.split), device)

    best = {"evaluate": float("inf"), "plain": float("inf")}
    for _ in range(args.repeats):
        for name in ("evaluate", "plain"):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if name == "evaluate":
                ensemble_predict(member, None, args.split, how)
            else:
                plain_loop(module, datamodule_for(module, None, overrides)[0].predict_loader(args.split), device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    ips = {k: n / v for k, v in best.items()}
    print(
        f"device={device} images={n} split={args.split} image_size={module.hparams.image_size} "
        f"batch={args.batch_size} workers={args.num_workers}"
    )
    print(
        f"evaluate path: {ips['evaluate']:.1f} img/s   plain no_grad loop: {ips['plain']:.1f} img/s   "
        f"ratio evaluate/plain = {ips['evaluate'] / ips['plain']:.3f} (target >= 0.97)"
    )


if __name__ == "__main__":
    main()
