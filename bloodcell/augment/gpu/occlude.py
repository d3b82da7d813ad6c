"""Occlusion batch ops on float 0–1 NCHW: bubbles and stain deposits blended over the smear, rectangular dropout.

Counts vary per image, so every image carries the maximum number of blobs/holes and the ones beyond
its drawn count are switched off (masks, not Python branches).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from bloodcell.augment.gpu.core import BatchOp, as_range, uniform
from bloodcell.errors import ConfigError


def _counts(value: Sequence[int], name: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in as_range(value, name))
    if not 0 <= lo <= hi or hi < 1:
        raise ConfigError(f"{name}={list(value)!r}: need 0 ≤ min ≤ max and max ≥ 1 (e.g. [1, 3]).")
    return lo, hi


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates, shaped to broadcast against (N, K, 1, 1) parameters."""
    ys = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    return ys, xs


class SmearArtifacts(BatchOp):
    """`bloodcell.augment.SmearArtifacts` per image: `count` blobs of radius `radius` (fraction of the side), each a
    dark purple stain deposit with probability `deposit_prob`, else an air bubble (bright disc, dark rim);
    blended over the image with an opacity drawn from `opacity`."""

    DEPOSIT_LOW, DEPOSIT_HIGH = (40, 10, 60), (110, 60, 140)  # RGB range of deposits, as the CPU op
    BUBBLE, RIM = 245, 70

    def __init__(self, count: Sequence[int] = (1, 3), radius: Sequence[float] = (0.04, 0.18), opacity: Sequence[float] = (0.2, 0.6),
                 deposit_prob: float = 0.5, p: float = 0.2) -> None:
        super().__init__(p)
        self.count, self.radius = _counts(count, "SmearArtifacts count"), as_range(radius, "SmearArtifacts radius")
        self.opacity, self.deposit_prob = as_range(opacity, "SmearArtifacts opacity"), float(deposit_prob)
        # buffers travel with the module: a torch.tensor(..., device=cuda) per step is a blocking host→device copy
        deposit = torch.tensor([self.DEPOSIT_LOW, self.DEPOSIT_HIGH], dtype=torch.float32).view(2, 1, 1, 3) / 255.0
        self.register_buffer("deposit_range", deposit, persistent=False)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev, k = x.device, self.count[1]
        ys, xs = _grid(h, w, dev)
        number = torch.randint(self.count[0], k + 1, (n, 1), device=dev)
        on = (torch.arange(k, device=dev).view(1, k) < number).float().view(n, k, 1, 1)
        cy = uniform(n * k, 0, h, dev).floor().view(n, k, 1, 1)
        cx = uniform(n * k, 0, w, dev).floor().view(n, k, 1, 1)
        r = (uniform(n * k, *self.radius, dev) * min(h, w)).clamp(min=1.0).floor().view(n, k, 1, 1)
        deposit = (torch.rand(n, k, 1, 1, device=dev) < self.deposit_prob).float()
        lo, hi = self.deposit_range.to(dev)  # each (1, 1, 3); already on the batch's device inside the module
        colour = lo + (hi - lo) * torch.rand(n, k, 3, device=dev)  # (n, k, 3)
        dist = torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)  # (n, k, h, w)
        disc = (r + 0.5 - dist).clamp(0.0, 1.0) * on
        rim = ((r / 6).floor().clamp(min=1.0) / 2 + 0.5 - (dist - r).abs()).clamp(0.0, 1.0) * on * (1 - deposit)
        overlay = x
        for j in range(k):
            dep = deposit[:, j].view(n, 1, 1, 1)
            fill = dep * colour[:, j].view(n, 3, 1, 1) + (1 - dep) * (self.BUBBLE / 255.0)
            overlay = overlay + (fill - overlay) * disc[:, j : j + 1]
            overlay = overlay + (self.RIM / 255.0 - overlay) * rim[:, j : j + 1]
        alpha = uniform(n, *self.opacity, dev).view(n, 1, 1, 1)
        return x + (overlay - x) * alpha


class CoarseDropout(BatchOp):
    """Albumentations `CoarseDropout(fill=random_uniform)` per image: `holes` rectangles of `height` × `width`
    (fractions of the side), each filled with a random colour."""

    def __init__(self, holes: Sequence[int] = (1, 3), height: Sequence[float] = (0.05, 0.15), width: Sequence[float] = (0.05, 0.15),
                 p: float = 0.15) -> None:
        super().__init__(p)
        self.holes, self.height, self.width = _counts(holes, "CoarseDropout holes"), as_range(height, "CoarseDropout height"), as_range(
            width, "CoarseDropout width")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev, k = x.device, self.holes[1]
        ys, xs = _grid(h, w, dev)
        number = torch.randint(self.holes[0], k + 1, (n, 1), device=dev)
        on = (torch.arange(k, device=dev).view(1, k) < number).view(n, k, 1, 1)
        hh = (uniform(n * k, *self.height, dev) * h).clamp(min=1.0).floor().view(n, k, 1, 1)
        ww = (uniform(n * k, *self.width, dev) * w).clamp(min=1.0).floor().view(n, k, 1, 1)
        y0 = (torch.rand(n, k, 1, 1, device=dev) * (h - hh + 1)).floor()
        x0 = (torch.rand(n, k, 1, 1, device=dev) * (w - ww + 1)).floor()
        inside = (ys >= y0) & (ys < y0 + hh) & (xs >= x0) & (xs < x0 + ww) & on  # (n, k, h, w)
        colour = torch.rand(n, k, 3, 1, 1, device=dev)  # one random colour per hole, as Albumentations' random_uniform
        for j in range(k):
            x = torch.where(inside[:, j : j + 1], colour[:, j], x)
        return x
