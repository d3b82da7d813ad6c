"""Optimizer (timm's factory), a warmup + cosine schedule built on torch's LambdaLR, and SAM's two steps.

torch schedulers, not timm's: Lightning steps torch LRSchedulers natively (timm's would need
`lr_scheduler_step` overridden).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


# -- sharpness-aware minimisation -------------------------------------------------------------------------------------
# SAM (Foret et al., ICLR 2021) seeks weights whose whole neighbourhood has a low loss; flat minima are the reading the
# domain-generalisation literature gives for why SWAD / SAM-style training transfers better to unseen domains (Cha et
# al., NeurIPS 2021; Wang et al., CVPR 2023). Written here as two small steps around any timm optimiser, not as
# pytorch_optimizer's SAM: that class wraps the optimiser it builds and expects the first gradients before its step(),
# while Lightning's automatic optimisation hands the optimiser a closure before any gradient exists.


@torch.no_grad()
def sam_perturb(params: list[torch.nn.Parameter], rho: float) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """Move every parameter that has a gradient by rho·g/‖g‖ (one global norm): the ascent step.

    Returns each moved parameter with a copy of its original value (restored exactly, not by subtracting the step).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return []
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = rho / (norm + 1e-12)
    saved = []
    for p in params:
        if p.grad is not None:
            saved.append((p, p.detach().clone()))
            p.add_((p.grad * scale).to(p.dtype))
    return saved


@torch.no_grad()
def sam_restore(saved: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
    """Undo sam_perturb: the optimiser then updates the original weights with the perturbed point's gradient."""
    for p, original in saved:
        p.copy_(original)


@contextmanager
def frozen_batchnorm_stats(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch as usual but leave their running statistics (and counters) alone.

    SAM's second forward pass sees the same batch at perturbed weights; counting it would update the running
    statistics twice per step, once of them at weights the optimiser never keeps.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0  # running = (1 - 0)·running + 0·batch
    try:
        yield
    finally:
        for m, (momentum, count) in zip(layers, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def check_sam_fits_trainer(rho: float, trainer: Any) -> None:
    """SAM's two passes need the whole step's gradient at full scale: no fp16 loss scaling, no accumulation."""
    if str(trainer.precision).startswith("16"):
        raise ConfigError(f"sam.rho={rho} with trainer.precision={trainer.precision}: fp16 loss scaling can hand SAM "
                          "an inf gradient that would corrupt the weights; use trainer.precision=bf16-mixed or 32-true, or sam.rho=0.")
    if int(trainer.accumulate_grad_batches) > 1:
        raise ConfigError(f"sam.rho={rho} with trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: SAM "
                          "perturbs with one batch's gradient; set trainer.accumulate_grad_batches=1 (or sam.rho=0).")
