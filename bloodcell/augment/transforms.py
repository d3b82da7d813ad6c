"""Albumentations transforms Albumentations lacks: RandAugment, AugMix, stain jitter, smear artifacts.

All are `A.ImageOnlyTransform`s drawing from the transform's own `random_generator`, which a
seeded `A.Compose(seed=...)` (and each DataLoader worker, see `seed_worker_transform`) sets, so
seeded runs repeat exactly. Input and output are HWC uint8.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from bloodcell.augment.ops import LevelOp
from bloodcell.errors import ConfigError


def _check_ops(ops: Sequence[Any], owner: str) -> list[LevelOp]:
    ops = list(ops or [])
    if not ops:
        raise ConfigError(f"{owner}: `ops` is empty; list level ops, e.g. {{_target_: bloodcell.augment.ops.Rotate, max_degrees: 30}}.")
    for i, op in enumerate(ops):
        if not callable(op):
            raise ConfigError(f"{owner}: ops[{i}]={op!r} is not an op; give each a _target_ from bloodcell.augment.ops.")
    return ops


def _range(value: int | Sequence[int], name: str) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not 1 <= int(lo) <= int(hi):
        raise ConfigError(f"{name}={value!r}: need 1 ≤ min ≤ max (e.g. [1, 3]).")
    return int(lo), int(hi)


class _LevelSampler:
    """Magnitude M (0..max_magnitude) with optional Gaussian std → level in [0, 1] (timm's `mstd`)."""

    magnitude: float
    magnitude_std: float
    max_magnitude: float

    def _level(self, rng: np.random.Generator) -> float:
        m = self.magnitude
        if self.magnitude_std > 0:
            m = rng.normal(m, self.magnitude_std)
        return float(np.clip(m, 0.0, self.max_magnitude) / self.max_magnitude)


class RandAugment(_LevelSampler, A.ImageOnlyTransform):
    """RandAugment (Cubuk et al. 2020, timm's `rand-mM-nN-mstdS`): N ops drawn per image, magnitude M.

    Each drawn op is applied with probability `op_prob` (timm uses 0.5), at a level drawn around M.
    """

    def __init__(self, ops: Sequence[LevelOp], num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 max_magnitude: float = 10.0, op_prob: float = 0.5, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.ops = _check_ops(ops, "RandAugment")
        if num_ops < 0 or max_magnitude <= 0:
            raise ConfigError(f"RandAugment num_ops={num_ops}, max_magnitude={max_magnitude}: need num_ops ≥ 0 and max_magnitude > 0.")
        self.num_ops, self.magnitude, self.magnitude_std = int(num_ops), float(magnitude), float(magnitude_std)
        self.max_magnitude, self.op_prob = float(max_magnitude), float(op_prob)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        for k in rng.integers(0, len(self.ops), size=self.num_ops):
            if rng.random() < self.op_prob:
                img = self.ops[k](img, self._level(rng), rng)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ops", "num_ops", "magnitude", "magnitude_std", "max_magnitude", "op_prob")


def mix_chains(original: np.ndarray, chains: Sequence[np.ndarray], weights: np.ndarray, m: float) -> np.ndarray:
    """AugMix blend: (1 − m)·original + m·Σ wᵢ·chainᵢ in float, rounded back to uint8.

    With wᵢ ≥ 0, Σwᵢ = 1 and m ∈ [0, 1] every pixel is a convex combination of the inputs, so it stays
    within their per-pixel min/max (rounding cannot leave an integer interval).
    """
    acc = original.astype(np.float32) * np.float32(1.0 - m)
    for w, chain in zip(weights, chains):
        acc = cv2.scaleAdd(chain.astype(np.float32), float(m * w), acc)
    return cv2.convertScaleAbs(acc)  # round half to even + saturate to uint8 (acc ≥ 0)


class AugMix(_LevelSampler, A.ImageOnlyTransform):
    """AugMix (Hendrycks et al. 2020): `width` chains of `depth` ops mixed with Dirichlet(alpha) weights,
    blended with the original by m ~ Beta(alpha, alpha). Keeps the image recognisable while varied."""

    def __init__(self, ops: Sequence[LevelOp], width: int = 3, depth: int | Sequence[int] = (1, 3), alpha: float = 1.0,
                 magnitude: float = 3.0, magnitude_std: float = 0.0, max_magnitude: float = 10.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.ops = _check_ops(ops, "AugMix")
        if width < 1 or alpha <= 0 or max_magnitude <= 0:
            raise ConfigError(
                f"AugMix width={width}, alpha={alpha}, max_magnitude={max_magnitude}: need width ≥ 1, alpha > 0, max_magnitude > 0."
            )
        self.width, self.depth, self.alpha = int(width), _range(depth, "AugMix depth"), float(alpha)
        self.magnitude, self.magnitude_std, self.max_magnitude = float(magnitude), float(magnitude_std), float(max_magnitude)

    def chains(self, img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for _ in range(self.width):
            x = img
            for _ in range(int(rng.integers(self.depth[0], self.depth[1] + 1))):
                x = self.ops[int(rng.integers(0, len(self.ops)))](x, self._level(rng), rng)
            out.append(x)
        return out

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        weights = rng.dirichlet([self.alpha] * self.width).astype(np.float32)
        m = float(rng.beta(self.alpha, self.alpha))
        return mix_chains(img, self.chains(img, rng), weights, m)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ops", "width", "depth", "alpha", "magnitude", "magnitude_std", "max_magnitude")


# Ruifrok & Johnston stain vectors (as in scikit-image's rgb_from_hed): haematoxylin, eosin, DAB.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
_OD_TABLE = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)  # optical density of each 8-bit level


class StainJitter(A.ImageOnlyTransform):
    """Stain-space colour augmentation (Tellez et al. 2018): scale and shift each stain's optical density.

    Pixels → optical density → stain concentrations (colour deconvolution) → cᵢ·αᵢ + βᵢ → back. αᵢ in
    1 ± `alpha`, βᵢ in ± `beta`. The shift β also tints the background, which is exactly the
    stain-colour/background shortcut another lab's images break.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.15, p: float = 0.5) -> None:
        super().__init__(p=p)
        if alpha < 0 or beta < 0:
            raise ConfigError(f"StainJitter alpha={alpha}, beta={beta}: must be ≥ 0.")
        self.alpha, self.beta = float(alpha), float(beta)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        a = rng.uniform(1.0 - self.alpha, 1.0 + self.alpha, size=3).astype(np.float32)
        b = rng.uniform(-self.beta, self.beta, size=3).astype(np.float32)
        # OD → stains → scale/shift → OD collapses to one affine map on optical density: od·M + t
        matrix = (HED_FROM_RGB * a) @ RGB_FROM_HED
        offset = b @ RGB_FROM_HED
        od = cv2.LUT(img, _OD_TABLE)
        od = cv2.transform(od, np.hstack([matrix.T, offset[:, None]]).astype(np.float32))
        out = cv2.exp(-np.maximum(od, 0.0, out=od))
        return cv2.convertScaleAbs(out, alpha=256.0, beta=-1.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha", "beta")


class SmearArtifacts(A.ImageOnlyTransform):
    """Bubbles (bright rings) and stain deposits (dark blobs) blended over the image.

    `count` blobs with radius a fraction `radius` of the side; each is a deposit with probability
    `deposit_prob`, else a bubble; all blended with opacity drawn from `opacity`.
    """

    def __init__(
        self,
        count: Sequence[int] = (1, 3),
        radius: Sequence[float] = (0.04, 0.18),
        opacity: Sequence[float] = (0.2, 0.6),
        deposit_prob: float = 0.5,
        p: float = 0.3,
    ) -> None:
        super().__init__(p=p)
        self.count = _range(count, "SmearArtifacts count")
        self.radius, self.opacity = (float(radius[0]), float(radius[1])), (float(opacity[0]), float(opacity[1]))
        self.deposit_prob = float(deposit_prob)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        h, w = img.shape[:2]
        overlay = img.copy()
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            r = max(1, int(rng.uniform(*self.radius) * min(h, w)))
            if rng.random() < self.deposit_prob:  # dark purple stain precipitate
                colour = tuple(int(v) for v in rng.integers([40, 10, 60], [110, 60, 140]))
                cv2.circle(overlay, center, r, colour, thickness=-1, lineType=cv2.LINE_AA)
            else:  # air bubble: bright disc with a dark rim
                cv2.circle(overlay, center, r, (245, 245, 245), thickness=-1, lineType=cv2.LINE_AA)
                cv2.circle(overlay, center, r, (70, 70, 70), thickness=max(1, r // 6), lineType=cv2.LINE_AA)
        opacity = float(rng.uniform(*self.opacity))
        return cv2.addWeighted(img, 1.0 - opacity, overlay, opacity, 0.0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("count", "radius", "opacity", "deposit_prob")
