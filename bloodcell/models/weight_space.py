"""Weight-space ensembles: one model whose weights are a convex combination of several models' weights.

Why: fine-tuning moves a pretrained network towards its training distribution; interpolating between the
head-only (linear-probe) model of a staged run and its fine-tuned end point (WiSE-FT, Wortsman et al., CVPR 2022)
keeps part of the pretrained features' robustness at no inference cost. Unlike an ensemble of predictions, this only
makes sense for models that share one initialisation (the phases or epochs of one run, not different seeds).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from bloodcell.errors import ConfigError


def convex_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """`weights` normalised to sum 1 (None: equal); negative weights or a zero sum are errors."""
    if n < 2:
        raise ConfigError(f"a weight-space ensemble needs at least 2 checkpoints (got {n}).")
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"weights has {len(weights)} entries for {n} checkpoints; give one per checkpoint or null (equal).")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights={weights} must be >= 0 with a positive sum (a convex combination).")
    total = sum(weights)
    return [w / total for w in weights]


def interpolate_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ wᵢ·stateᵢ for every floating-point tensor (parameters and BatchNorm statistics, in float32, cast back);
    integer buffers (BatchNorm's num_batches_tracked) are taken from the last state.

    `weights` must already be convex (see `convex_weights`); every state must have the same keys and shapes.
    """
    if len(states) != len(weights):
        raise ConfigError(f"{len(states)} state dicts but {len(weights)} weights.")
    keys = list(states[-1])
    for i, state in enumerate(states[:-1]):
        if set(state) != set(keys):
            only = sorted(set(state) ^ set(keys))[:5]
            raise ConfigError(f"checkpoint {i + 1} has other weights than the last one (e.g. {only}): not the same architecture.")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[-1].shape for t in tensors):
            raise ConfigError(f"weight {key} has shapes {[tuple(t.shape) for t in tensors]}: not the same architecture.")
        last = tensors[-1]
        if not last.is_floating_point():
            out[key] = last.clone()
            continue
        acc = torch.zeros_like(last, dtype=torch.float32)
        for w, t in zip(weights, tensors):
            acc += w * t.to(torch.float32)
        out[key] = acc.to(last.dtype)
    return out
