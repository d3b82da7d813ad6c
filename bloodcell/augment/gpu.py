"""On-device batch augmentation: geometric and colour ops on a whole NCHW batch at once.

Why: at 96 px a fast GPU trains thousands of images per second, more than a few CPU workers
running per-image Albumentations can feed. These ops run on the batch after it reached the device
(at the start of `BloodCellModule.training_step`, training batches only), with *independent random parameters per image*
(torchvision's v2 transforms draw one set of parameters per call, i.e. per batch, which is why
the common ops here are vectorised by hand). Any other torchvision v2 transform can still be
listed; it is then applied image by image (`PerImage`).

Config: `conf/batch_augment/*.yaml` → `ops:` list of `_target_` entries (this module's ops or
`torchvision.transforms.v2.*`). Inputs and outputs are uint8 (0–255) or float batches; the dtype
is kept.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from bloodcell.config import TRUSTED_BATCH_OP_PREFIXES, is_trusted_target, to_plain
from bloodcell.errors import ConfigError


def _per_image_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Bool (N,) mask: which images of the batch an op with probability p touches."""
    return torch.rand(x.shape[0], device=x.device) < p


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


class RandomFlip(nn.Module):
    """Horizontal and/or vertical flip, each drawn per image (cells have no canonical orientation)."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.5) -> None:
        super().__init__()
        self.horizontal, self.vertical = float(horizontal), float(vertical)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p, dim in ((self.horizontal, 3), (self.vertical, 2)):
            if p > 0:
                m = _per_image_mask(x, p).view(-1, 1, 1, 1)
                x = torch.where(m, x.flip(dim), x)
        return x


class RandomRot90(nn.Module):
    """Rotate by k·90° with k drawn per image (square images only), with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ConfigError(f"RandomRot90 needs square images, got {tuple(x.shape[-2:])}; drop it from batch_augment.ops.")
        k = torch.randint(1, 4, (x.shape[0],), device=x.device) * _per_image_mask(x, self.p)
        out = x.clone()
        for turns in (1, 2, 3):
            sel = k == turns
            if sel.any():
                out[sel] = torch.rot90(x[sel], turns, dims=(2, 3))
        return out


class RandomAffine(nn.Module):
    """Rotation (degrees), isotropic scale and translation (fraction of size), drawn per image.

    One `affine_grid` + `grid_sample` for the whole batch; borders are reflected (like
    Albumentations' BORDER_REFLECT_101 in `augment=basic`), so no black corners.
    """

    def __init__(self, degrees: float | Sequence[float] = 20.0, scale: Sequence[float] = (0.9, 1.1), translate: float = 0.0,
                 p: float = 0.5, padding_mode: str = "reflection") -> None:
        super().__init__()
        deg = (-float(degrees), float(degrees)) if isinstance(degrees, (int, float)) else tuple(float(d) for d in degrees)
        self.degrees, self.scale, self.translate, self.p = deg, tuple(float(s) for s in scale), float(translate), float(p)
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        active = _per_image_mask(x, self.p)
        if not active.any():
            return x
        angle = torch.deg2rad(_uniform(n, *self.degrees, dev)) * active
        scale = torch.where(active, _uniform(n, *self.scale, dev), torch.ones(n, device=dev))
        shift = _uniform(2 * n, -self.translate, self.translate, dev).view(n, 2) * 2 * active.view(n, 1)  # grid units span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output→input mapping: inverse scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        xf = x.float()
        grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
        out = F.grid_sample(xf, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        return _like(out, x)


class ColorJitter(nn.Module):
    """Brightness, contrast and saturation factors in [1-b, 1+b] etc., drawn per image, with probability p."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.0, p: float = 0.5) -> None:
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.p = float(brightness), float(contrast), float(saturation), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        active = _per_image_mask(x, self.p).view(n, 1, 1, 1)
        if not active.any():
            return x
        top = 255.0 if x.dtype == torch.uint8 else 1.0
        out = x.float()

        def factor(amount: float) -> torch.Tensor:
            f = _uniform(n, 1 - amount, 1 + amount, dev).view(n, 1, 1, 1)
            return torch.where(active, f, torch.ones_like(f))

        if self.brightness > 0:
            out = out * factor(self.brightness)
        gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]) if out.shape[1] == 3 else out
        if self.contrast > 0:
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
            out = mean + (out - mean) * factor(self.contrast)
        if self.saturation > 0:
            gray = 0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3]
            out = gray + (out - gray) * factor(self.saturation)
        return _like(out.clamp(0, top), x)


class PerImage(nn.Module):
    """Any transform (e.g. a torchvision v2 op) applied image by image, so each image gets its own draw."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(img) for img in x])


def _like(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Back to the input's dtype (uint8 is rounded and clamped)."""
    if ref.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(ref.dtype)


class BatchAugment(nn.Sequential):
    """The ops of `batch_augment.ops`, applied in order to a training batch on its device."""


def build_batch_augment(cfg: Any) -> BatchAugment | None:
    """`{"ops": [...]}` (or a bare list) → BatchAugment; None / no ops → None (off)."""
    if cfg is None:
        return None
    cfg = to_plain(cfg)
    ops = cfg.get("ops") if isinstance(cfg, Mapping) else cfg
    if not ops:
        return None
    if isinstance(ops, Mapping) or isinstance(ops, str):
        raise ConfigError("batch_augment.ops must be a list of ops (each with a _target_), e.g. conf/batch_augment/basic.yaml.")
    built: list[nn.Module] = []
    for i, op in enumerate(ops):
        target = str(op.get("_target_", "")) if isinstance(op, Mapping) else ""
        if not is_trusted_target(target, TRUSTED_BATCH_OP_PREFIXES):
            raise ConfigError(
                f"batch_augment.ops[{i}] = {op!r}: each op needs a _target_ in bloodcell.augment.gpu, bloodcell.augment.domain "
                "or torchvision.transforms.v2."
            )
        try:
            module = instantiate(op, _convert_="all")
        except Exception as exc:
            raise ConfigError(f"batch_augment.ops[{i}] ({target}) could not be built: {exc}") from None
        built.append(module if target.startswith("bloodcell.") else PerImage(module))
    return BatchAugment(*built)


__all__ = ["BatchAugment", "ColorJitter", "PerImage", "RandomAffine", "RandomFlip", "RandomRot90", "build_batch_augment"]
