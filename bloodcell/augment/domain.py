"""Batch-level domain-generalisation ops (input-style randomisation), on NCHW uint8 or float batches.

RandConv and Fourier amplitude mixing change low-level image style (texture, colour response,
blur, contrast) while keeping the shapes a class depends on. Both run after the batch reached its
device, with parameters drawn per image from torch's global RNG (seeded per batch by EpochSeed).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from bloodcell.errors import ConfigError


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _back(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if ref.dtype == torch.uint8:
        return (out * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.to(ref.dtype)


class RandConv(nn.Module):
    """Random convolution (Xu et al., ICLR 2021): each selected image is filtered by its own random
    k×k kernel (3→3 channels, N(0, 1/(3k²)) weights), re-standardised to the image's own per-channel
    mean/std and blended with the original by α ~ U(0, 1) ("RandConv-mix")."""

    def __init__(self, kernel_sizes: tuple[int, ...] = (1, 3, 5, 7), p: float = 0.5, mix: bool = True) -> None:
        super().__init__()
        self.kernel_sizes, self.p, self.mix = tuple(int(k) for k in kernel_sizes), float(p), bool(mix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # every image is filtered and the selection applied with torch.where: no data-dependent branch, so no
        # host-device synchronisation on a GPU
        sel = (torch.rand(n, device=x.device) < self.p).view(n, 1, 1, 1)
        xf = _float(x)
        k = random.choice(self.kernel_sizes)  # Python's RNG (re-seeded per batch by EpochSeed): no tensor read back
        weight = torch.randn(n * c, c, k, k, device=x.device) * (1.0 / (c * k * k)) ** 0.5
        y = F.conv2d(F.pad(xf.reshape(1, n * c, h, w), [k // 2] * 4, mode="reflect"), weight, groups=n).view(n, c, h, w)
        mu, sd = xf.mean((2, 3), keepdim=True), xf.std((2, 3), keepdim=True)
        y = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-6) * sd + mu
        if self.mix:
            a = torch.rand(n, 1, 1, 1, device=x.device)
            y = a * xf + (1 - a) * y
        return torch.where(sel, _back(y.clamp(0, 1), x), x)


FREQUENCY_BANDS = ("all", "low", "high")


def frequency_band(h: int, w: int, band: str, cutoff: float, device: torch.device | None = None) -> torch.Tensor:
    """H×W mask (1 = mixed) of the FFT frequencies in `band`: "low" = max(|fx|, |fy|) ≤ cutoff cycles per pixel
    (FDA's centred square, Yang & Soatto 2020; the mean colour included), "high" = the rest, "all" = every one."""
    if band not in FREQUENCY_BANDS:
        raise ConfigError(f"frequencies={band!r}: use one of {FREQUENCY_BANDS} (cutoff sets the low band's edge)")
    if band == "all":
        return torch.ones(h, w, device=device)
    radius = torch.maximum(torch.fft.fftfreq(h, device=device).abs().view(h, 1), torch.fft.fftfreq(w, device=device).abs().view(1, w))
    low = (radius <= cutoff).float()
    return low if band == "low" else 1 - low


class FourierAmplitudeMix(nn.Module):
    """Amplitude mix (FACT, Xu et al., CVPR 2021): the amplitude spectrum of each selected image is
    mixed with that of another image of the batch, Â = (1−λ)A + λA′ with λ ~ U(0, eta), while the phase
    (which carries shape) is kept. Transfers colour, contrast and texture style between images.

    `frequencies` limits the mix to one band (`cutoff` in cycles per pixel): "low" moves colour, illumination and
    cell-scale shading only, "high" texture, chromatin and sharpness only; "all" (FACT) both.
    """

    def __init__(self, eta: float = 1.0, p: float = 0.5, frequencies: str = "all", cutoff: float = 0.09) -> None:
        super().__init__()
        self.eta, self.p, self.frequencies, self.cutoff = float(eta), float(p), str(frequencies), float(cutoff)
        frequency_band(2, 2, self.frequencies, self.cutoff)  # a misspelt band fails when the op is built, not mid-epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < 2:
            return x
        sel = (torch.rand(n, device=x.device) < self.p).view(n, 1, 1, 1)
        spec = torch.fft.fft2(_float(x))
        perm = torch.randperm(n, device=x.device)
        lam = torch.rand(n, 1, 1, 1, device=x.device) * self.eta
        if self.frequencies != "all":  # the full-spectrum path keeps its old arithmetic exactly
            lam = lam * frequency_band(*x.shape[-2:], self.frequencies, self.cutoff, x.device)
        out = mix_amplitude(spec, spec.abs()[perm], lam)
        return torch.where(sel, _back(out, x), x)  # unselected images stay bit-exact (no FFT round trip), no sync


def mix_amplitude(spec: torch.Tensor, other_amplitude: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """The image (float, [0, 1]) with `spec`'s phase and the amplitude (1−λ)|spec| + λ·other_amplitude.

    Shared by the training op above and by test-time transfer towards training images' amplitude
    (scripts/crosslab_diagnostics.py amplitude), so both mean exactly the same mix.
    """
    amplitude = (1 - lam) * spec.abs() + lam * other_amplitude
    return torch.fft.ifft2(torch.polar(amplitude, spec.angle())).real.clamp(0, 1)
