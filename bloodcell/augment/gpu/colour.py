"""Colour and illumination batch ops on float 0–1 NCHW RGB: stain jitter, HSV, white balance, grey, gamma, uneven light.

Each mirrors the CPU op of `augment=pipeline` it stands in for (named in its docstring), with its
parameters drawn per image from torch's global RNG on the batch's device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from bloodcell.augment.gpu.core import BatchOp, as_range, luminance, one_of, uniform
from bloodcell.augment.transforms import HED_FROM_RGB, RGB_FROM_HED
from bloodcell.errors import ConfigError


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


class ColorJitter(BatchOp):
    """Brightness, contrast and saturation factors in [1-b, 1+b] etc., drawn per image."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.0, p: float = 0.5) -> None:
        super().__init__(p)
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        if self.brightness > 0:
            x = x * _per_image(uniform(n, 1 - self.brightness, 1 + self.brightness, dev))
        if self.contrast > 0:
            mean = luminance(x).mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * _per_image(uniform(n, 1 - self.contrast, 1 + self.contrast, dev))
        if self.saturation > 0:
            grey = luminance(x)
            x = grey + (x - grey) * _per_image(uniform(n, 1 - self.saturation, 1 + self.saturation, dev))
        return x.clamp(0.0, 1.0)


class StainJitter(BatchOp):
    """`bloodcell.augment.StainJitter` per image: HED optical-density jitter (Tellez et al. 2018).

    Pixels → optical density → stain concentrations (colour deconvolution) → cᵢ·αᵢ + βᵢ → back, with
    αᵢ in 1 ± `alpha` and βᵢ in ± `beta` per stain and image; one batched 3×3 map on optical density.
    """

    def __init__(self, alpha: float = 0.4, beta: float = 0.2, p: float = 0.8) -> None:
        super().__init__(p)
        if alpha < 0 or beta < 0:
            raise ConfigError(f"StainJitter alpha={alpha}, beta={beta}: must be ≥ 0.")
        self.alpha, self.beta = float(alpha), float(beta)
        self.register_buffer("hed_from_rgb", torch.from_numpy(HED_FROM_RGB.copy()), persistent=False)
        self.register_buffer("rgb_from_hed", torch.from_numpy(RGB_FROM_HED.copy()), persistent=False)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        a = uniform(3 * n, 1 - self.alpha, 1 + self.alpha, dev).view(n, 1, 3)
        b = uniform(3 * n, -self.beta, self.beta, dev).view(n, 3)
        hed, rgb = self.hed_from_rgb.to(dev), self.rgb_from_hed.to(dev)
        matrix = (hed.unsqueeze(0) * a) @ rgb  # (n, 3, 3): od_row → od_row
        offset = b @ rgb  # (n, 3)
        od = torch.log((x * 255.0 + 1.0) / 256.0).neg_().reshape(n, 3, -1)
        od = torch.baddbmm(offset.view(n, 3, 1), matrix.transpose(1, 2), od).clamp_(min=0.0)  # per pixel: od·M + t
        return od.neg_().exp_().mul_(256.0 / 255.0).sub_(1.0 / 255.0).clamp_(0.0, 1.0).view(x.shape)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB 0–1 → hue (0–1 of a turn), saturation, value; each (N, 1, H, W)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    v, _ = x.max(dim=1, keepdim=True)
    delta = v - x.min(dim=1, keepdim=True)[0]
    s = torch.where(v > 0, delta / v.clamp(min=1e-8), torch.zeros_like(v))
    safe = delta.clamp(min=1e-8)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue (0–1), saturation, value (N, 1, H, W) → RGB 0–1 (N, 3, H, W)."""
    # (5, 3, 1) made on the device: torch.tensor(..., device=cuda) would be a blocking host→device copy every step
    k = (torch.arange(5.0, 0.0, -2.0, device=h.device).view(1, 3, 1, 1) + h * 6.0) % 6.0
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


class HueSaturationValue(BatchOp):
    """Albumentations `HueSaturationValue` per image: hue rotated by ± `hue_shift` degrees, saturation and value
    shifted by ± `sat_shift` / `val_shift` (fractions of full scale; Albumentations' 50 and 20 of 255 ≈ 0.2, 0.08).

    Albumentations counts hue in OpenCV units (half degrees): its `hue_shift_limit: 30` is 60 degrees here.
    Grey pixels (saturation 0) stay grey, as there.
    """

    def __init__(self, hue_shift: float = 60.0, sat_shift: float = 0.2, val_shift: float = 0.08, p: float = 0.7) -> None:
        super().__init__(p)
        self.hue_shift, self.sat_shift, self.val_shift = float(hue_shift), float(sat_shift), float(val_shift)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        h, s, v = rgb_to_hsv(x)
        h = (h + _per_image(uniform(n, -self.hue_shift, self.hue_shift, dev)) / 360.0) % 1.0
        s = torch.where(s > 0, (s + _per_image(uniform(n, -self.sat_shift, self.sat_shift, dev))).clamp(0.0, 1.0), s)
        v = (v + _per_image(uniform(n, -self.val_shift, self.val_shift, dev))).clamp(0.0, 1.0)
        return hsv_to_rgb(h, s, v)


class PlanckianJitter(BatchOp):
    """Albumentations `PlanckianJitter(mode=blackbody)` per image: white balance of a black body at a temperature
    drawn from `temperature` (K); red and blue gains relative to green from Albumentations' own table."""

    def __init__(self, temperature: Sequence[float] = (3000, 15000), p: float = 0.3) -> None:
        super().__init__(p)
        from albumentations.augmentations.pixel.functional import PLANCKIAN_COEFFS

        table = PLANCKIAN_COEFFS["blackbody"]
        temps = sorted(table)
        self.temperature = as_range(temperature, "PlanckianJitter temperature")
        self._t0, self._step = float(temps[0]), float(temps[1] - temps[0])
        coeffs = torch.tensor([table[t] for t in temps], dtype=torch.float32)
        self.register_buffer("gains", torch.stack([coeffs[:, 0] / coeffs[:, 1], coeffs[:, 2] / coeffs[:, 1]], 1), persistent=False)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        gains = self.gains.to(x.device)
        pos = ((uniform(x.shape[0], *self.temperature, x.device) - self._t0) / self._step).clamp(0, len(gains) - 1)
        left = pos.floor().long().clamp(max=len(gains) - 2)
        w = (pos - left).unsqueeze(1)
        rb = gains[left] * (1 - w) + gains[left + 1] * w  # (N, 2): red, blue gain
        scale = torch.stack([rb[:, 0], torch.ones_like(rb[:, 0]), rb[:, 1]], 1).view(-1, 3, 1, 1)
        return (x * scale).clamp(0.0, 1.0)


class ToGray(BatchOp):
    """Grey image in all three channels (Albumentations `ToGray`)."""

    def __init__(self, p: float = 0.05) -> None:
        super().__init__(p)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return luminance(x).expand_as(x)


class RandomGamma(BatchOp):
    """x ** γ with γ drawn per image from `gamma` (Albumentations `RandomGamma` gamma_limit [70, 150] → [0.7, 1.5])."""

    def __init__(self, gamma: Sequence[float] = (0.7, 1.5), p: float = 0.4) -> None:
        super().__init__(p)
        self.gamma = as_range(gamma, "RandomGamma gamma")
        if self.gamma[0] <= 0:
            raise ConfigError(f"RandomGamma gamma={list(self.gamma)}: must be > 0.")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0.0) ** _per_image(uniform(x.shape[0], *self.gamma, x.device))


class Illumination(BatchOp):
    """Uneven illumination (Albumentations `Illumination`, one of its modes per image): a linear gradient at a random
    angle, corner vignetting, or a Gaussian spotlight; intensity from `intensity`, brightening or darkening."""

    MODES = ("linear", "corner", "gaussian")

    def __init__(self, intensity: Sequence[float] = (0.05, 0.2), modes: Sequence[str] = MODES,
                 center: Sequence[float] = (0.1, 0.9), sigma: Sequence[float] = (0.2, 1.0), p: float = 0.5) -> None:
        super().__init__(p)
        unknown = sorted(set(modes) - set(self.MODES))
        if unknown or not modes:
            raise ConfigError(f"Illumination modes={list(modes)!r}: choose from {list(self.MODES)}.")
        self.modes = [str(m) for m in modes]
        self.intensity, self.center = as_range(intensity, "Illumination intensity"), as_range(center, "Illumination center")
        self.sigma = as_range(sigma, "Illumination sigma")

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """A gradient at a random angle: 1 ± |i| across the image."""
        n, _, h, w = x.shape
        ys, xs, i = self._grid(x)
        angle = uniform(n, 0.0, 2 * math.pi, x.device).view(n, 1, 1)
        g = xs * torch.cos(angle) + ys * torch.sin(angle)
        lo, hi = g.amin(dim=(1, 2), keepdim=True), g.amax(dim=(1, 2), keepdim=True)
        g = (g - lo) / (hi - lo).clamp(min=1e-6)
        g = torch.where(i < 0, 1 - g, g)
        return self._light(x, g * 2 * i.abs() + 1 - i.abs())

    def corner(self, x: torch.Tensor) -> torch.Tensor:
        """Vignetting from a random corner: 1 − i·distance/diagonal."""
        n, _, h, w = x.shape
        ys, xs, i = self._grid(x)
        corner = torch.randint(0, 4, (n, 1, 1), device=x.device)
        cy, cx = torch.where(corner >= 2, h - 1.0, 0.0), torch.where((corner == 1) | (corner == 2), w - 1.0, 0.0)
        return self._light(x, 1 - i * torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / math.hypot(h, w))

    def gaussian(self, x: torch.Tensor) -> torch.Tensor:
        """A Gaussian spotlight (or shadow) at a random centre."""
        n, _, h, w = x.shape
        ys, xs, i = self._grid(x)
        cx = w * uniform(n, *self.center, x.device).view(n, 1, 1)
        cy = h * uniform(n, *self.center, x.device).view(n, 1, 1)
        sigma2 = 2 * (max(h, w) * uniform(n, *self.sigma, x.device).view(n, 1, 1)) ** 2
        return self._light(x, 1 + i * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / sigma2))

    def _grid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
        return ys, xs, (torch.randint(0, 2, (n, 1, 1), device=x.device) * 2 - 1) * uniform(n, *self.intensity, x.device).view(n, 1, 1)

    @staticmethod
    def _light(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        return (x * field.unsqueeze(1)).clamp_(0.0, 1.0)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return one_of(x, 1.0, [getattr(self, mode) for mode in self.modes])
