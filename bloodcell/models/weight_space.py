"""Weight-space ensembles: one model whose weights are a convex combination of several models' weights.

Why: fine-tuning moves a pretrained network towards its training distribution; interpolating between the
head-only (linear-probe) model of a staged run and its fine-tuned end point (WiSE-FT, Wortsman et al., CVPR 2022)
can keep part of the pretrained features' robustness at no inference cost; averaging a run's last epochs (SWA) finds
flatter minima. Unlike an ensemble of predictions, this only makes sense for models that share one initialisation (the
phases or epochs of one run, not different seeds). Measured on experiment=robust neither moved another lab's images
(docs/results/crosslab/README.md): WiSE-FT needs a pretrained end that is robust on its own, which Lite0 + a head is not.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

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
    """Σ wᵢ·stateᵢ for every floating-point tensor (parameters and BatchNorm statistics, in ≥ float32, cast back);
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
        dtype = torch.promote_types(last.dtype, torch.float32)  # half precision summed in float32, float64 kept
        acc = torch.zeros_like(last, dtype=dtype)
        for w, t in zip(weights, tensors):
            acc += w * t.to(dtype)
        out[key] = acc.to(last.dtype)
    return out


def differing_batchnorm(states: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    """Names of the BatchNorm layers whose running statistics differ between `states` (layers frozen in every
    member keep identical statistics, which averaging leaves intact)."""
    names = []
    for key in states[-1]:
        if key.endswith(".running_mean"):
            layer = key.removesuffix(".running_mean")
            stats = [(s[key], s[f"{layer}.running_var"]) for s in states]
            if any(not (torch.equal(m, stats[-1][0]) and torch.equal(v, stats[-1][1])) for m, v in stats):
                names.append(layer)
    return names


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor], layers: Collection[str]) -> int:
    """Recompute the running statistics of the BatchNorm `layers` (names in `model.named_modules()`) as the plain
    average over `batches`, the rest of the model in eval mode; returns the number of images seen.

    Why: averaged weights do not produce the averaged activations, so averaged BatchNorm statistics no longer match
    the features (the reason SWA re-estimates them, Izmailov et al. 2018). Only the training data is used. Not
    torch.optim.swa_utils.update_bn: that resets every BatchNorm layer (here layers frozen in all members keep their
    statistics) and runs the whole model in train mode (dropout, stochastic depth on).
    """
    modules = dict(model.named_modules())
    missing = [n for n in layers if not isinstance(modules.get(n), torch.nn.modules.batchnorm._BatchNorm)]
    if missing:
        raise ConfigError(f"not BatchNorm layers of this model: {missing[:5]}")
    was_training = model.training
    model.eval()
    momenta = {}
    for name in layers:
        bn = modules[name]
        momenta[name] = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
        bn.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for name in layers:
            modules[name].momentum = momenta[name]
        model.train(was_training)
    if seen == 0 and layers:
        raise ConfigError("no images to re-estimate BatchNorm statistics on (an empty training split?).")
    return seen
