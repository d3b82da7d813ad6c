"""Colour-space augmentations aimed at other labs' stains and cameras: RandStainNA and channel mixing.

Stain protocols, lamps and cameras change how the same cell renders (the nucleus/cytoplasm contrast, the
background tint, the colour response of the sensor). These ops sample such renderings per image:
- `RandStainNA` (Shen et al., MICCAI 2022): draw a virtual stain template, i.e. per-image LAB channel
  means and stds, from Gaussians fitted to the training images (widened by `std_scale`), and Reinhard-map
  the image onto it. Unlike fixed jitter it stays within (a widened copy of) realistic stainings.
- `ChannelMix`: a random 3×3 colour matrix near the identity with rows summing to one (brightness kept),
  a camera/white-balance response change; `albumentations.ToGray` and `HEStain` complement them in YAML.
Both are Albumentations image-only transforms drawing from the transform's seeded `random_generator`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from bloodcell.errors import ConfigError


def _triple(value: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (3,):
        raise ConfigError(f"RandStainNA {name}={list(value)!r}: give 3 numbers (L, a, b).")
    return arr


class RandStainNA(A.ImageOnlyTransform):
    """Reinhard-map the image onto LAB statistics sampled from the training distribution (OpenCV 8-bit LAB units).

    `mean_mu`/`mean_sigma`: Gaussian of the per-image channel means; `std_mu`/`std_sigma`: of the per-image
    channel stds; `std_scale` widens both sigmas (augmentation beyond the training labs).
    """

    def __init__(self, mean_mu: Sequence[float], mean_sigma: Sequence[float], std_mu: Sequence[float], std_sigma: Sequence[float],
                 std_scale: float = 1.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.mean_mu, self.mean_sigma = _triple(mean_mu, "mean_mu"), _triple(mean_sigma, "mean_sigma")
        self.std_mu, self.std_sigma = _triple(std_mu, "std_mu"), _triple(std_sigma, "std_sigma")
        if std_scale < 0 or (self.std_mu <= 0).any():
            raise ConfigError(f"RandStainNA std_scale={std_scale} must be ≥ 0 and std_mu > 0.")
        self.std_scale = float(std_scale)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        rng = self.random_generator
        target_mean = self.mean_mu + rng.normal(0, 1, 3) * self.mean_sigma * self.std_scale
        target_std = np.maximum(self.std_mu + rng.normal(0, 1, 3) * self.std_sigma * self.std_scale, 1.0)
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
        mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
        lab = (lab - mean) / np.maximum(std, 1e-3) * target_std + target_mean
        return cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean_mu", "mean_sigma", "std_mu", "std_sigma", "std_scale")


def lab_statistics(images: np.ndarray) -> dict[str, list[float]]:
    """Per-image LAB channel mean/std over a stack of RGB uint8 images → RandStainNA's four parameter triples."""
    stats = np.array([np.r_[lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)]
                      for lab in (cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB).astype(np.float32) for im in images)])
    mu, sigma = stats.mean(0).astype(np.float64), stats.std(0).astype(np.float64)
    return {"mean_mu": mu[:3].round(2).tolist(), "mean_sigma": sigma[:3].round(2).tolist(),
            "std_mu": mu[3:].round(2).tolist(), "std_sigma": sigma[3:].round(2).tolist()}


class ChannelMix(A.ImageOnlyTransform):
    """out = M · rgb with M = I + N(0, sigma) off-diagonal mixing, each row renormalised to sum 1 (a sensor/white-balance change)."""

    def __init__(self, sigma: float = 0.15, p: float = 0.3) -> None:
        super().__init__(p=p)
        if sigma < 0:
            raise ConfigError(f"ChannelMix sigma={sigma} must be ≥ 0.")
        self.sigma = float(sigma)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        m = np.eye(3, dtype=np.float32) + self.random_generator.normal(0, self.sigma, (3, 3)).astype(np.float32)
        m = np.clip(m, 0, None)
        m /= np.maximum(m.sum(axis=1, keepdims=True), 1e-6)
        return cv2.transform(img, m)  # saturating uint8 arithmetic

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)
