"""RandAugment and AugMix as batch ops: the level ops of conf/augment/_ops.yaml on float 0–1 NCHW, drawn per image.

An op list is a mapping `name: strength at full level` (null for ops without one), e.g. `{rotate: 30,
posterize: 4, equalize: null}`, with the same meaning as the CPU ops in `bloodcell/augment/ops.py`.

Batched form, so that the cost is that of the ops actually applied: one pass over the list, each
photometric op on a random subset of the images (`core.on_subset`) at the rate the CPU op applies it,
and the geometric ops as one warp on their subset (each image in it gets one of them). The CPU versions
apply exactly `num_ops` / `depth` draws per image in the drawn order; here the number of ops an image
gets varies around that mean and they apply geometry first, then in list order. The level (magnitude
± std) is drawn once per op and batch on the host; the direction (sign) per image.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from bloodcell.augment.gpu.colour import hsv_to_rgb, rgb_to_hsv
from bloodcell.augment.gpu.core import BatchOp, affine_theta, check_p, luminance, on_subset
from bloodcell.errors import ConfigError, suggest

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "scale")


def _smooth_kernel(device: torch.device) -> torch.Tensor:
    """PIL's SMOOTH filter (Sharpness), [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, made on the device: moving a CPU
    constant there every step is a blocking host→device copy (found by benchmarks/syncs.py --cuda on an H100)."""
    weight = torch.full((3, 3), 1.0 / 13.0, device=device)
    weight[1, 1].fill_(5.0 / 13.0)  # fill_ takes the number on the host; `weight[1, 1] = x` would make a tensor of it
    return weight


def _sign(n: int, device: torch.device) -> torch.Tensor:
    """(n,) random ±1: each image picks a direction (left/right, brighter/darker)."""
    return torch.randint(0, 2, (n,), device=device).mul_(2).sub_(1).float()


def _factor(x: torch.Tensor, amount: float) -> torch.Tensor:
    return (1.0 + _sign(x.shape[0], x.device) * amount).clamp_(min=0.0).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return torch.lerp(degenerate, x, factor).clamp_(0.0, 1.0)


def autocontrast(x: torch.Tensor, level: float, strength: float | None) -> torch.Tensor:
    """Stretch each channel of each image to the full range."""
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-6), x)


def equalize(x: torch.Tensor, level: float, strength: float | None) -> torch.Tensor:
    """Histogram-equalise each channel of each image (OpenCV `equalizeHist` on the 8-bit levels)."""
    n, c, h, w = x.shape
    q = (x * 255.0).round_().clamp_(0, 255).long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(1, q, torch.ones(1, 1, device=x.device).expand(n * c, h * w))
    cdf = hist.cumsum(dim=1)
    first = torch.where(cdf > 0, cdf, torch.full_like(cdf, float(h * w))).amin(dim=1, keepdim=True)
    lut = ((cdf - first) * 255.0 / (h * w - first).clamp(min=1.0)).round_().clamp_(0, 255)
    lut = torch.where(first < h * w, lut, torch.arange(256.0, device=x.device).expand_as(lut))  # one grey level: unchanged
    return (lut.gather(1, q) / 255.0).view(n, c, h, w)


def posterize(x: torch.Tensor, level: float, min_bits: float) -> torch.Tensor:
    """Keep 8 → `min_bits` bits (never fewer than 1)."""
    step = 2.0 ** (8 - min(8, max(1, round(8 - level * (8 - float(min_bits))))))
    return torch.floor((x * 255.0).round_() / step) * (step / 255.0)


def solarize(x: torch.Tensor, level: float, max_strength: float) -> torch.Tensor:
    """Invert pixels at or above a threshold that falls from 256 (no-op) to 256 − `max_strength`."""
    return torch.where(x >= (256.0 - level * float(max_strength)) / 255.0, 1.0 - x, x)


def brightness(x: torch.Tensor, level: float, max_delta: float) -> torch.Tensor:
    """Scale intensities by 1 ± `max_delta`·level."""
    return (x * _factor(x, level * max_delta)).clamp_(0.0, 1.0)


def contrast(x: torch.Tensor, level: float, max_delta: float) -> torch.Tensor:
    """Blend with the image's mean grey level by 1 ± `max_delta`·level."""
    return _blend(x, luminance(x).mean(dim=(1, 2, 3), keepdim=True), _factor(x, level * max_delta))


def saturation(x: torch.Tensor, level: float, max_delta: float) -> torch.Tensor:
    """Blend with the greyscale image by 1 ± `max_delta`·level."""
    return _blend(x, luminance(x), _factor(x, level * max_delta))


def sharpness(x: torch.Tensor, level: float, max_delta: float) -> torch.Tensor:
    """Blend with a smoothed copy by 1 ± `max_delta`·level."""
    c = x.shape[1]
    weight = _smooth_kernel(x.device).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, groups=c)
    return _blend(x, smooth, _factor(x, level * max_delta))


def hue(x: torch.Tensor, level: float, max_degrees: float) -> torch.Tensor:
    """Rotate hue by ± `max_degrees`·level."""
    h, s, v = rgb_to_hsv(x)
    turn = (_sign(x.shape[0], x.device) * (level * float(max_degrees) / 360.0)).view(-1, 1, 1, 1)
    return hsv_to_rgb((h + turn) % 1.0, s, v)


def gamma(x: torch.Tensor, level: float, max_log2: float) -> torch.Tensor:
    """Gamma 2^(± `max_log2`·level)."""
    return x.clamp(min=0.0) ** torch.exp2(_sign(x.shape[0], x.device) * (level * float(max_log2))).view(-1, 1, 1, 1)


PHOTOMETRIC = {f.__name__: f for f in (autocontrast, equalize, posterize, solarize, brightness, contrast, saturation, sharpness,
                                       hue, gamma)}


def warp_one_of(x: torch.Tensor, ops: Sequence[tuple[str, float]], level: float) -> torch.Tensor:
    """Each image gets one geometric op of `ops` (rotate, shear_x/y, translate_x/y, scale) at ± level·strength."""
    n, dev = x.shape[0], x.device
    pick = torch.randint(0, len(ops), (n,), device=dev)
    v = _sign(n, dev) * level
    amount = {name: torch.where(pick == i, v * float(strength), torch.zeros_like(v)) for i, (name, strength) in enumerate(ops)}
    zero = torch.zeros_like(v)
    angle, hx, hy = (amount.get(k, zero) for k in ("rotate", "shear_x", "shear_y"))
    t, s = torch.deg2rad(angle), (1.0 + amount.get("scale", zero)).clamp(min=0.05)
    cos, sin = torch.cos(t) * s, torch.sin(t) * s
    # forward map R(angle)·scale · [[1, hx], [hy, 1]]
    forward = torch.stack([torch.stack([cos - sin * hy, cos * hx - sin], 1), torch.stack([sin + cos * hy, sin * hx + cos], 1)], 1)
    shift = torch.stack([amount.get("translate_x", zero), amount.get("translate_y", zero)], 1).unsqueeze(2) * 2  # grid units span 2
    grid = F.affine_grid(affine_theta(forward, shift), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def parse_ops(ops: Mapping[str, float | None], owner: str) -> list[tuple[str, float | None]]:
    """`{name: strength}` from YAML → checked list in the given order."""
    if not isinstance(ops, Mapping) or not ops:
        raise ConfigError(f"{owner}: `ops` must be a non-empty mapping name → strength, e.g. {{rotate: 30, equalize: null}}.")
    known = [*PHOTOMETRIC, *GEOMETRIC]
    for name, strength in ops.items():
        if name not in known:
            raise ConfigError(f"{owner}: unknown op {name!r}.{suggest(name, known)} Known: {', '.join(known)}.")
        if strength is None and name not in ("autocontrast", "equalize"):
            raise ConfigError(f"{owner}: op {name!r} needs its strength at full level (e.g. {name}: 0.5).")
    return [(str(k), None if v is None else float(v)) for k, v in ops.items()]


class _LevelOps(BatchOp):
    """Shared by RandAugment and AugMix: one pass over the op list, each op on its own random subset."""

    def __init__(self, ops: Mapping[str, float | None], magnitude: float, magnitude_std: float, max_magnitude: float, p: float) -> None:
        super().__init__(p)
        self.ops = parse_ops(ops, type(self).__name__)
        if max_magnitude <= 0:
            raise ConfigError(f"{type(self).__name__} max_magnitude={max_magnitude}: must be > 0.")
        self.magnitude, self.magnitude_std, self.max_magnitude = float(magnitude), float(magnitude_std), float(max_magnitude)
        self._geometric = [(name, s) for name, s in self.ops if name in GEOMETRIC]
        self._photometric = [(name, s) for name, s in self.ops if name in PHOTOMETRIC]

    def level(self) -> float:
        """A level in [0, 1]: magnitude (± std, Gaussian, drawn on the host) / max_magnitude."""
        m = random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
        return min(max(m, 0.0), self.max_magnitude) / self.max_magnitude

    def one_pass(self, x: torch.Tensor, p_op: float) -> torch.Tensor:
        """Geometry (one op per image) on about p_op·(#geometric ops)·N images, then each photometric op on p_op·N.

        Writes into `x` (callers pass a batch of their own)."""
        if self._geometric:
            x = on_subset(x, min(1.0, p_op * len(self._geometric)), lambda s: warp_one_of(s, self._geometric, self.level()), True)
        for name, strength in self._photometric:
            x = on_subset(x, p_op, lambda s, name=name, strength=strength: PHOTOMETRIC[name](s, self.level(), strength), True)
        return x


class RandAugment(_LevelOps):
    """`bloodcell.augment.RandAugment` per image: about `num_ops` ops drawn from `ops`, each kept with probability
    `op_prob`, at a level around `magnitude` (± `magnitude_std`) out of `max_magnitude`. Batched: op k touches each
    image with probability num_ops·op_prob/K, the CPU op's rate."""

    def __init__(self, ops: Mapping[str, float | None], num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 max_magnitude: float = 10.0, op_prob: float = 0.5, p: float = 0.7) -> None:
        super().__init__(ops, magnitude, magnitude_std, max_magnitude, p)
        if num_ops < 1:
            raise ConfigError(f"RandAugment num_ops={num_ops}: must be ≥ 1.")
        self.num_ops, self.op_prob = int(num_ops), check_p(op_prob, "RandAugment op_prob")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.one_pass(x, min(1.0, self.num_ops * self.op_prob / len(self.ops)))


class AugMix(_LevelOps):
    """`bloodcell.augment.AugMix` per image: `width` chains of about `depth` ops, Dirichlet(`alpha`)-mixed and blended
    with the original by m ~ Beta(`alpha`, `alpha`). Batched: in each chain op k touches each image with
    probability mean(depth)/K."""

    def __init__(self, ops: Mapping[str, float | None], width: int = 3, depth: Sequence[int] = (1, 3), alpha: float = 1.0,
                 magnitude: float = 3.0, magnitude_std: float = 0.0, max_magnitude: float = 10.0, p: float = 0.4) -> None:
        super().__init__(ops, magnitude, magnitude_std, max_magnitude, p)
        lo, hi = (int(d) for d in ((depth, depth) if isinstance(depth, int) else depth))
        if width < 1 or alpha <= 0 or not 1 <= lo <= hi:
            raise ConfigError(f"AugMix width={width}, depth={depth}, alpha={alpha}: need width ≥ 1, 1 ≤ depth min ≤ max, alpha > 0.")
        self.width, self.depth, self.alpha = int(width), (lo, hi), float(alpha)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        concentration = torch.full((n, self.width), self.alpha, device=dev)
        # validate_args=False: the distributions' argument checks read device values (a sync)
        weights = torch.distributions.Dirichlet(concentration, validate_args=False).sample()
        m = torch.distributions.Beta(concentration[:, 0], concentration[:, 0], validate_args=False).sample().view(n, 1, 1, 1)
        p_op = min(1.0, (self.depth[0] + self.depth[1]) / 2 / len(self.ops))
        mixed = sum(weights[:, i].view(n, 1, 1, 1) * self.one_pass(x.clone(), p_op) for i in range(self.width))
        return torch.lerp(x, mixed, m)


__all__ = ["AugMix", "RandAugment"]
