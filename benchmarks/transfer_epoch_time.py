"""Seconds per epoch of the issue-5 presets on pbc128, from a few timed training steps (CPU).

Prints CPU seconds (process time, robust to a shared machine) and wall seconds per training batch
for each fine-tuning phase and per evaluation batch, then projects one epoch of the full split.

    python benchmarks/transfer_epoch_time.py experiment=pbc128_lite0_staged [steps=10]
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bloodcell.config import compose  # noqa: E402
from bloodcell.models.finetune import FinetunePlan  # noqa: E402
from bloodcell.training import build_datamodule, build_module  # noqa: E402


def timed(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call, after one warm-up call."""
    fn()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n


def main(argv: list[str]) -> None:
    steps = int(next((a.split("=", 1)[1] for a in argv if a.startswith("steps=")), 10))
    overrides = [a for a in argv if not a.startswith("steps=")] + ["data.num_workers=0"]
    cfg = compose("train", overrides)
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg, dm)
    plan = FinetunePlan.from_model_cfg(dict(cfg.model))
    opt = torch.optim.AdamW([p for p in module.parameters()], lr=1e-4)
    x, y = next(iter(dm.train_dataloader()))
    xv, _ = next(iter(dm.val_dataloader()))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        module.model(module.preprocess(x)).log_softmax(-1).gather(1, y[:, None]).mean().neg().backward()
        opt.step()

    def eval_step() -> None:
        with torch.inference_mode():
            module.model(module.preprocess(xv))

    n_train = -(-len(dm.splits["train"]) // x.shape[0])
    n_val = -(-len(dm.splits["val"]) // xv.shape[0])
    module.train()
    ev_cpu, ev_wall = None, None
    phases = [1, 2] if plan.freeze else [2]
    print(f"{cfg.model.backbone} image_size={cfg.data.image_size} batch={x.shape[0]} train batches/epoch={n_train} val batches={n_val} "
          f"threads={torch.get_num_threads()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for phase in phases:
        if plan.needs_callback:
            plan.apply(module.model, epoch=0 if phase == 1 else max(plan.freeze_epochs, 0))
        cpu, wall = timed(train_step, steps)
        module.eval()
        ev_cpu, ev_wall = timed(eval_step, max(1, steps // 3))
        module.train()
        print(f"phase {phase}: train {cpu:.2f} CPU s/batch ({wall:.2f} wall); eval {ev_cpu:.2f} CPU s/batch ({ev_wall:.2f} wall); "
              f"projected epoch ≈ {n_train * cpu + n_val * ev_cpu:.0f} CPU s ({n_train * wall + n_val * ev_wall:.0f} wall s here)")


if __name__ == "__main__":
    main(sys.argv[1:])
