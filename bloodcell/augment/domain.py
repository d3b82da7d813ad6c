"""Batch-level domain-generalisation ops (input-style randomisation), on NCHW uint8 or float batches.

RandConv and Fourier amplitude mixing change low-level image style (texture, colour response,
blur, contrast) while keeping the shapes a class depends on. Both run after the batch reached its
device, with parameters drawn per image from torch's global RNG (seeded per batch by EpochSeed).
"""
from __future__ import annotations

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
        sel = torch.rand(n, device=x.device) < self.p
        if not bool(sel.any()):
            return x
        xf = _float(x)
        out = xf.clone()
        k = self.kernel_sizes[int(torch.randint(len(self.kernel_sizes), (1,)))]
        idx = sel.nonzero().flatten()
        src = xf[idx]
        m = len(idx)
        weight = torch.randn(m * c, c, k, k, device=x.device) * (1.0 / (c * k * k)) ** 0.5
        y = F.conv2d(F.pad(src.reshape(1, m * c, h, w), [k // 2] * 4, mode="reflect"), weight, groups=m).view(m, c, h, w)
        mu, sd = src.mean((2, 3), keepdim=True), src.std((2, 3), keepdim=True)
        y = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-6) * sd + mu
        if self.mix:
            a = torch.rand(m, 1, 1, 1, device=x.device)
            y = a * src + (1 - a) * y
        out[idx] = y.clamp(0, 1)
        return _back(out, x)


class FourierAmplitudeMix(nn.Module):
    """Amplitude mix (FACT, Xu et al., CVPR 2021): the amplitude spectrum of each selected image is
    mixed with that of another image of the batch, Â = (1−λ)A + λA′ with λ ~ U(0, eta), while the phase
    (which carries shape) is kept. Transfers colour, contrast and texture style between images."""

    def __init__(self, eta: float = 1.0, p: float = 0.5) -> None:
        super().__init__()
        self.eta, self.p = float(eta), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        sel = torch.rand(n, device=x.device) < self.p
        if n < 2 or not bool(sel.any()):
            return x
        xf = _float(x)
        spec = torch.fft.fft2(xf)
        amp, phase = spec.abs(), spec.angle()
        perm = torch.randperm(n, device=x.device)
        lam = torch.rand(n, 1, 1, 1, device=x.device) * self.eta * sel.view(n, 1, 1, 1)
        amp = (1 - lam) * amp + lam * amp[perm]
        out = torch.fft.ifft2(torch.polar(amp, phase)).real.clamp(0, 1)
        return _back(out, x)
