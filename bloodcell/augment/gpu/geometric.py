"""Geometric batch ops: flips, 90° turns, affine (rotate/scale/shear/shift), pixelation; parameters drawn per image."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bloodcell.augment.gpu.core import BatchOp, affine_theta, as_range, check_p, per_image_mask, uniform
from bloodcell.errors import ConfigError


class RandomFlip(nn.Module):
    """Horizontal and/or vertical flip, each drawn per image (cells have no canonical orientation)."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.5) -> None:
        super().__init__()
        self.horizontal, self.vertical = check_p(horizontal, "RandomFlip"), check_p(vertical, "RandomFlip")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p, dim in ((self.horizontal, 3), (self.vertical, 2)):
            if p > 0:
                m = per_image_mask(x, p).view(-1, 1, 1, 1)
                x = torch.where(m, x.flip(dim), x)
        return x


class RandomRot90(nn.Module):
    """Rotate by k·90° with k ∈ {1, 2, 3} drawn per image (square images only), with probability p.

    All three turns are computed and selected with `torch.where`: no data-dependent branch (a sync).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_p(p, "RandomRot90")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ConfigError(f"RandomRot90 needs square images, got {tuple(x.shape[-2:])}; drop it from batch_augment.ops.")
        k = (torch.randint(1, 4, (x.shape[0],), device=x.device) * per_image_mask(x, self.p)).view(-1, 1, 1, 1)
        out = x
        for turns in (1, 2, 3):
            out = torch.where(k == turns, torch.rot90(x, turns, dims=(2, 3)), out)
        return out


class RandomAffine(BatchOp):
    """Rotation (degrees), scale, shear (degrees) and translation (fraction of the side), drawn per image.

    Like Albumentations' `Affine` in `augment=pipeline`: with `keep_ratio=false` the x and y scales are
    drawn independently, shear is drawn for both axes. One `affine_grid` + `grid_sample` for the whole
    batch; borders are reflected (BORDER_REFLECT_101's role), so no black corners.
    """

    def __init__(self, degrees: float | Sequence[float] = 20.0, scale: Sequence[float] = (0.9, 1.1), translate: float = 0.0,
                 shear: float | Sequence[float] = 0.0, keep_ratio: bool = True, p: float = 0.5,
                 padding_mode: str = "reflection") -> None:
        super().__init__(p)
        self.degrees, self.scale = as_range(degrees, "RandomAffine degrees", True), as_range(scale, "RandomAffine scale")
        self.translate, self.shear = float(translate), as_range(shear, "RandomAffine shear", True)
        self.keep_ratio, self.padding_mode = bool(keep_ratio), padding_mode
        if self.scale[0] <= 0:
            raise ConfigError(f"RandomAffine scale={list(self.scale)}: must be > 0.")

    def matrices(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) output→input maps in grid units of rotate · shear · scale, then shift."""
        angle = torch.deg2rad(uniform(n, *self.degrees, device))
        sx = uniform(n, *self.scale, device)
        sy = sx if self.keep_ratio else uniform(n, *self.scale, device)
        hx, hy = (torch.tan(torch.deg2rad(uniform(n, *self.shear, device))) for _ in range(2))
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        shear = torch.stack([torch.stack([torch.ones_like(hx), hx], 1), torch.stack([hy, torch.ones_like(hy)], 1)], 1)
        forward = rotate @ shear @ torch.diag_embed(torch.stack([sx, sy], 1))
        shift = uniform(2 * n, -self.translate, self.translate, device).view(n, 2, 1) * 2  # grid units span 2
        return affine_theta(forward, shift)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.matrices(x.shape[0], x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)


class Pixelate(BatchOp):
    """Nearest-neighbour down- and up-scaling by a factor in `scale` (Albumentations `Downscale` with INTER_NEAREST).

    Blocky pixels of low-resolution sensors and upscaled crops. Two gathers with per-image index maps.
    """

    def __init__(self, scale: Sequence[float] = (0.35, 0.75), p: float = 0.2) -> None:
        super().__init__(p)
        self.scale = as_range(scale, "Pixelate scale")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"Pixelate scale={list(self.scale)}: need 0 < low ≤ high ≤ 1.")

    @staticmethod
    def _index(size: int, small: torch.Tensor) -> torch.Tensor:
        """(N, size) source index of each output pixel after size → small → size nearest resizes."""
        i = torch.arange(size, device=small.device, dtype=torch.float32).view(1, -1)
        low = torch.floor(i * small.view(-1, 1) / size)  # pixel of the small image
        return torch.floor(low * size / small.view(-1, 1)).clamp_(0, size - 1).long()

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = uniform(n, *self.scale, x.device)
        rows = self._index(h, torch.floor(h * s).clamp_(min=1)).view(n, 1, h, 1).expand(n, c, h, w)
        cols = self._index(w, torch.floor(w * s).clamp_(min=1)).view(n, 1, 1, w).expand(n, c, h, w)
        return x.gather(2, rows).gather(3, cols)
