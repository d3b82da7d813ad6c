"""Optics and camera batch ops on float 0–1 NCHW: per-image blur kernels (defocus / motion / Gaussian), sensor
noise and JPEG compression artefacts (8×8 DCT quantised with the standard tables at a per-image quality)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bloodcell.augment.gpu.core import BatchOp, as_range, uniform
from bloodcell.errors import ConfigError


class Blur(BatchOp):
    """One of defocus (disc of radius `defocus_radius` px), motion (line of `motion_length` px at a random angle) or
    Gaussian (sigma `gaussian_sigma` px) blur per image, like `augment=pipeline`'s OneOf(Defocus, MotionBlur,
    GaussianBlur). Every image gets its own kernel; one grouped convolution blurs the whole batch."""

    KINDS = ("defocus", "motion", "gaussian")

    def __init__(self, defocus_radius: Sequence[float] = (1, 3), motion_length: Sequence[float] = (3, 7),
                 gaussian_sigma: Sequence[float] = (0.5, 1.2), kinds: Sequence[str] = KINDS, p: float = 0.4) -> None:
        super().__init__(p)
        unknown = sorted(set(kinds) - set(self.KINDS))
        if unknown or not kinds:
            raise ConfigError(f"Blur kinds={list(kinds)!r}: choose from {list(self.KINDS)}.")
        self.kinds = [str(k) for k in kinds]
        self.defocus_radius = as_range(defocus_radius, "Blur defocus_radius")
        self.motion_length = as_range(motion_length, "Blur motion_length")
        self.gaussian_sigma = as_range(gaussian_sigma, "Blur gaussian_sigma")
        if min(self.defocus_radius[0], self.motion_length[0], self.gaussian_sigma[0]) <= 0:
            raise ConfigError("Blur: radius, length and sigma ranges must be > 0.")
        reach = max(self.defocus_radius[1] + 1, self.motion_length[1] / 2 + 1, 3 * self.gaussian_sigma[1])
        self.size = 2 * int(math.ceil(reach)) + 1

    def kernels(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, size, size) normalised kernels, one drawn kind per image."""
        r = torch.arange(self.size, device=device, dtype=torch.float32) - self.size // 2
        ys, xs = r.view(1, -1, 1), r.view(1, 1, -1)
        dist = torch.sqrt(ys**2 + xs**2)
        found = {}
        if "defocus" in self.kinds:  # antialiased disc
            radius = uniform(n, *self.defocus_radius, device).view(n, 1, 1)
            found["defocus"] = (radius + 0.5 - dist).clamp(0.0, 1.0)
        if "motion" in self.kinds:  # antialiased segment through the centre
            half = (uniform(n, *self.motion_length, device).view(n, 1, 1) - 1) / 2
            angle = uniform(n, 0.0, math.pi, device).view(n, 1, 1)
            along = xs * torch.cos(angle) + ys * torch.sin(angle)
            across = -xs * torch.sin(angle) + ys * torch.cos(angle)
            found["motion"] = (1.0 - across.abs()).clamp(min=0.0) * (half + 0.5 - along.abs()).clamp(0.0, 1.0)
        if "gaussian" in self.kinds:
            sigma = uniform(n, *self.gaussian_sigma, device).view(n, 1, 1)
            found["gaussian"] = torch.exp(-(dist**2) / (2 * sigma**2))
        choice = torch.randint(0, len(self.kinds), (n, 1, 1), device=device)
        k = found[self.kinds[0]]
        for i, kind in enumerate(self.kinds[1:], start=1):
            k = torch.where(choice == i, found[kind], k)
        return k / k.sum(dim=(1, 2), keepdim=True)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight = self.kernels(n, x.device).unsqueeze(1).expand(n, c, self.size, self.size).reshape(n * c, 1, self.size, self.size)
        pad = self.size // 2
        padded = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect" if min(h, w) > pad else "replicate")
        return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


class GaussNoise(BatchOp):
    """Additive Gaussian noise, per pixel and channel, with a standard deviation drawn per image from `std`
    (fractions of full scale, as Albumentations' `std_range`)."""

    def __init__(self, std: Sequence[float] = (0.02, 0.08), p: float = 0.3) -> None:
        super().__init__(p)
        self.std = as_range(std, "GaussNoise std")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        std = uniform(x.shape[0], *self.std, x.device).view(-1, 1, 1, 1)
        return (x + torch.randn_like(x) * std).clamp(0.0, 1.0)


# ITU-T T.81 Annex K tables (luminance, chrominance), quality 50
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
         18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100,
         103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
_CHROMA += [99] * 32


def _dct_matrix() -> torch.Tensor:
    k, i = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    d = torch.cos((2 * i + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


class JpegLike(BatchOp):
    """JPEG compression at a quality drawn per image from `quality` (Albumentations `ImageCompression`): YCbCr,
    4:2:0 chroma subsampling, 8×8 DCT, quantisation with the standard tables scaled as libjpeg scales them, and back.
    Only the lossless entropy coding is left out, so the blocking and ringing artefacts are those of a real JPEG."""

    def __init__(self, quality: Sequence[float] = (25, 90), p: float = 0.3) -> None:
        super().__init__(p)
        self.quality = as_range(quality, "JpegLike quality")
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise ConfigError(f"JpegLike quality={list(self.quality)}: need 1 ≤ low ≤ high ≤ 100.")
        self.register_buffer("dct", _dct_matrix(), persistent=False)
        self.register_buffer("tables", torch.tensor([_LUMA, _CHROMA], dtype=torch.float32).view(2, 8, 8), persistent=False)

    def _codec(self, plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) level-shifted plane (H, W multiples of 8) → quantised and reconstructed; table (N, 1, 8, 8)."""
        n, c, h, w = plane.shape
        d = self.dct.to(plane.device)
        blocks = plane.view(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (n, c, by, bx, 8, 8)
        coeff = d @ blocks @ d.T
        q = table.view(n, 1, 1, 1, 8, 8)
        coeff = torch.round(coeff / q) * q
        return (d.T @ coeff @ d).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ph, pw = (-h) % 16, (-w) % 16
        img = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255.0
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        y = 0.299 * r + 0.587 * g + 0.114 * b - 128.0
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        q = uniform(n, *self.quality, x.device).round()
        scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).view(n, 1, 1, 1)
        tables = ((self.tables.to(x.device).unsqueeze(0) * scale + 50.0) / 100.0).floor().clamp(1.0, 255.0)  # (n, 2, 8, 8)
        y = self._codec(y, tables[:, 0:1])
        chroma = F.avg_pool2d(torch.cat([cb, cr], 1), 2)
        chroma = F.interpolate(self._codec(chroma, tables[:, 1:2]), scale_factor=2, mode="bilinear", align_corners=False)
        y = y + 128.0
        cb, cr = chroma[:, 0:1], chroma[:, 1:2]
        out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1) / 255.0
        return out[:, :, :h, :w].clamp(0.0, 1.0)
