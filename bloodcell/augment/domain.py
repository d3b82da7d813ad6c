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


class FourierAmplitudeMix(nn.Module):
    """Amplitude mix (FACT, Xu et al., CVPR 2021): the amplitude spectrum of each selected image is
    mixed with that of another image of the batch, Â = (1−λ)A + λA′ with λ ~ U(0, eta), while the phase
    (which carries shape) is kept. Transfers colour, contrast and texture style between images."""

    def __init__(self, eta: float = 1.0, p: float = 0.5) -> None:
        super().__init__()
        self.eta, self.p = float(eta), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n < 2:
            return x
        sel = (torch.rand(n, device=x.device) < self.p).view(n, 1, 1, 1)
        spec = torch.fft.fft2(_float(x))
        amp, phase = spec.abs(), spec.angle()
        perm = torch.randperm(n, device=x.device)
        lam = torch.rand(n, 1, 1, 1, device=x.device) * self.eta
        amp = (1 - lam) * amp + lam * amp[perm]
        out = torch.fft.ifft2(torch.polar(amp, phase)).real.clamp(0, 1)
        return torch.where(sel, _back(out, x), x)  # unselected images stay bit-exact (no FFT round trip), no sync
