"""Optimizer (timm's factory) and a warmup + cosine schedule built on torch's LambdaLR.

torch schedulers, not timm's: Lightning steps torch LRSchedulers natively (timm's would need
`lr_scheduler_step` overridden).
"""
from __future__ import annotations

import math

import timm.optim
import torch

from bloodcell.errors import ConfigError, suggest


def check_optimizer_name(name: str) -> None:
    """Stop at configure time, with close names, when timm has no optimizer called `name`."""
    names = timm.optim.list_optimizers()
    if name.lower() not in names:
        raise ConfigError(f"optim.optimizer.opt={name!r} is not a timm optimizer.{suggest(name.lower(), names)} Configs: conf/optim/.")


def warmup_cosine_lambda(total_steps: int, warmup_steps: int, min_lr_ratio: float, warmup_start_ratio: float):
    """LR multiplier per step: linear warmup from warmup_start_ratio to 1, then cosine down to min_lr_ratio."""
    total_steps = max(1, int(total_steps))
    warmup_steps = min(max(0, int(warmup_steps)), total_steps - 1) if total_steps > 1 else 0

    def f(step: int) -> float:
        if step < warmup_steps:
            return warmup_start_ratio + (1 - warmup_start_ratio) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float,
                  warmup_start_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule as a torch LambdaLR (stepped per batch by Lightning), scaling each param group's own LR."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(total_steps, warmup_steps, min_lr_ratio, warmup_start_ratio))
