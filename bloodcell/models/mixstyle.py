"""MixStyle (Zhou et al., ICLR 2021): mix per-channel feature statistics between images in early backbone stages.

Early feature statistics (channel means and stds) encode image style: stain, illumination, camera. Replacing them,
during training only, by a random convex mix with another image's statistics makes the network unable to rely on
style, while the normalised features (shape) are untouched. Inserted with forward hooks after timm `feature_info`
stages, so any timm backbone works and checkpoints hold no extra weights; in eval mode it is the identity.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bloodcell.config import require_keys
from bloodcell.errors import ConfigError


class MixStyle(nn.Module):
    """With probability p per batch: x ← σ_mix · (x − μ)/σ + μ_mix, with (μ, σ) mixed with a shuffled image's by λ ~ Beta(α, α)."""

    def __init__(self, p: float, alpha: float, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.alpha, self.eps = float(p), float(alpha), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or float(torch.rand(())) >= self.p:
            return x
        n = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n, 1, 1, 1)).to(device=x.device, dtype=x.dtype)
        perm = torch.randperm(n, device=x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (x - mu) / sig * sig_mix + mu_mix

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"


def attach_mixstyle(model: nn.Module, cfg: Mapping[str, Any] | None) -> list[MixStyle]:
    """Hook MixStyle after the backbone stages `cfg["stages"]` (timm feature_info indices) when `cfg["p"] > 0`.

    The MixStyle modules are kept on `model.mixstyle` so train()/eval() switch them with the model.
    """
    if not cfg:
        return []
    c = require_keys(cfg, ("p", "alpha", "stages"), "model.mixstyle")
    if float(c["p"]) <= 0:
        return []
    info = list(getattr(model.backbone, "feature_info", None) or [])
    names = [f["module"] for f in info if isinstance(f, Mapping) and "module" in f]
    bad = [s for s in c["stages"] if not 0 <= int(s) < len(names)]
    if not names or bad:
        raise ConfigError(f"model.mixstyle.stages={list(c['stages'])}: the backbone has feature stages 0..{len(names) - 1} ({names}).")
    mixers = []
    for stage in c["stages"]:
        mixer = MixStyle(float(c["p"]), float(c["alpha"]))
        model.backbone.get_submodule(names[int(stage)]).register_forward_hook(lambda _m, _i, out, mixer=mixer: mixer(out))
        mixers.append(mixer)
    model.mixstyle = nn.ModuleList(mixers)
    return mixers
