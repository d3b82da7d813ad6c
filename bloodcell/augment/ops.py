"""Level ops: image operations whose strength is a level in [0, 1], for RandAugment and AugMix.

Each op is a small callable class built from YAML (`_target_: bloodcell.augment.ops.Rotate`,
`max_degrees: 30`), so which ops run and how strong they are at full magnitude is config. The op
gets `level = magnitude / max_magnitude` and the transform's seeded numpy Generator, and maps
HWC uint8 → HWC uint8 with OpenCV (fast at 96 px, unlike PIL round trips).
"""
from __future__ import annotations

import cv2
import numpy as np

from bloodcell.errors import ConfigError

BORDER = cv2.BORDER_REFLECT_101  # reflect the smear background instead of painting black corners


def _signed(value: float, rng: np.random.Generator) -> float:
    """Symmetric ops (rotate left/right, brighter/darker) pick a direction at random."""
    return value if rng.random() < 0.5 else -value


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def _blend(img: np.ndarray, degenerate: np.ndarray, factor: float) -> np.ndarray:
    """PIL ImageEnhance semantics: factor 1 → img, 0 → degenerate, >1 → extrapolate (clipped)."""
    return cv2.addWeighted(img, factor, degenerate, 1.0 - factor, 0.0)


def _warp(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=BORDER)


class LevelOp:
    """Base: `op(img, level, rng)`; `level` in [0, 1] scales the op's configured maximum."""

    def __call__(self, img: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Identity(LevelOp):
    """Leaves the image unchanged (the 'no-op' draw of RandAugment/AugMix)."""

    def __call__(self, img, level, rng):
        return img


class AutoContrast(LevelOp):
    """Stretch each channel to the full 0–255 range (no magnitude)."""

    def __call__(self, img, level, rng):
        lo = img.reshape(-1, img.shape[2]).min(0).astype(np.float32)
        hi = img.reshape(-1, img.shape[2]).max(0).astype(np.float32)
        scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1), 1.0)
        out = (img.astype(np.float32) - np.where(hi > lo, lo, 0)) * scale
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class Equalize(LevelOp):
    """Histogram-equalise each channel (no magnitude)."""

    def __call__(self, img, level, rng):
        return np.dstack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(img.shape[2])])


class Invert(LevelOp):
    """Negative image (255 - pixel); not in conf/augment/_ops.yaml's lists (stained cells are never seen inverted)."""

    def __call__(self, img, level, rng):
        return 255 - img


class Rotate(LevelOp):
    """Rotation by up to `max_degrees` at full magnitude, random sign, reflected borders."""

    def __init__(self, max_degrees: float = 30.0) -> None:
        self.max_degrees = float(max_degrees)

    def __call__(self, img, level, rng):
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), _signed(level * self.max_degrees, rng), 1.0)
        return _warp(img, m)


class Shear(LevelOp):
    """Shear along `axis` ("x" or "y") by up to `max_shear` (tan of the angle), about the centre."""

    def __init__(self, axis: str = "x", max_shear: float = 0.3) -> None:
        if axis not in ("x", "y"):
            raise ConfigError(f"Shear axis={axis!r}: use 'x' or 'y'.")
        self.axis, self.max_shear = axis, float(max_shear)

    def __call__(self, img, level, rng):
        h, w = img.shape[:2]
        s = _signed(level * self.max_shear, rng)
        if self.axis == "x":
            m = np.float32([[1, s, -s * (h / 2 - 0.5)], [0, 1, 0]])
        else:
            m = np.float32([[1, 0, 0], [s, 1, -s * (w / 2 - 0.5)]])
        return _warp(img, m)


class Translate(LevelOp):
    """Shift along `axis` by up to `max_fraction` of the image side."""

    def __init__(self, axis: str = "x", max_fraction: float = 0.3) -> None:
        if axis not in ("x", "y"):
            raise ConfigError(f"Translate axis={axis!r}: use 'x' or 'y'.")
        self.axis, self.max_fraction = axis, float(max_fraction)

    def __call__(self, img, level, rng):
        h, w = img.shape[:2]
        d = _signed(level * self.max_fraction, rng)
        m = np.float32([[1, 0, d * w if self.axis == "x" else 0], [0, 1, d * h if self.axis == "y" else 0]])
        return _warp(img, m)


class Scale(LevelOp):
    """Zoom in or out by a factor up to 1 ± `max_delta` (other labs image cells at other magnifications)."""

    def __init__(self, max_delta: float = 0.3) -> None:
        self.max_delta = float(max_delta)

    def __call__(self, img, level, rng):
        h, w = img.shape[:2]
        factor = max(0.05, 1.0 + _signed(level * self.max_delta, rng))
        return _warp(img, cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 0.0, factor))


class Solarize(LevelOp):
    """Invert pixels above a threshold that falls from 256 (no-op) to `256 - max_strength`."""

    def __init__(self, max_strength: int = 256) -> None:
        self.max_strength = int(max_strength)

    def __call__(self, img, level, rng):
        threshold = 256 - level * self.max_strength
        x = np.arange(256, dtype=np.float32)
        return _lut(img, np.where(x >= threshold, 255 - x, x))


class Posterize(LevelOp):
    """Keep 8 → `min_bits` bits. Clamped to ≥ 1 bit: 0 bits (timm/PIL's magnitude-10 pitfall) would erase the image."""

    def __init__(self, min_bits: int = 4) -> None:
        if not 1 <= int(min_bits) <= 8:
            raise ConfigError(f"Posterize min_bits={min_bits}: must be within 1..8.")
        self.min_bits = int(min_bits)

    def __call__(self, img, level, rng):
        bits = int(np.clip(round(8 - level * (8 - self.min_bits)), 1, 8))
        mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
        return img & mask


class Brightness(LevelOp):
    """Scale intensities by 1 ± `max_delta`·level."""

    def __init__(self, max_delta: float = 0.9) -> None:
        self.max_delta = float(max_delta)

    def __call__(self, img, level, rng):
        factor = max(0.0, 1.0 + _signed(level * self.max_delta, rng))
        return _lut(img, np.arange(256, dtype=np.float32) * factor)


class Contrast(LevelOp):
    """Blend with the mean grey level by 1 ± `max_delta`·level."""

    def __init__(self, max_delta: float = 0.9) -> None:
        self.max_delta = float(max_delta)

    def __call__(self, img, level, rng):
        factor = max(0.0, 1.0 + _signed(level * self.max_delta, rng))
        mean = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
        return _lut(img, mean + (np.arange(256, dtype=np.float32) - mean) * factor)


class Saturation(LevelOp):
    """PIL 'Color': blend with the greyscale image by 1 ± `max_delta`·level."""

    def __init__(self, max_delta: float = 0.9) -> None:
        self.max_delta = float(max_delta)

    def __call__(self, img, level, rng):
        factor = max(0.0, 1.0 + _signed(level * self.max_delta, rng))
        grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return _blend(img, grey, factor)


class Sharpness(LevelOp):
    """Blend with a smoothed copy by 1 ± `max_delta`·level (>1 sharpens, <1 softens)."""

    def __init__(self, max_delta: float = 0.9) -> None:
        self.max_delta = float(max_delta)

    def __call__(self, img, level, rng):
        factor = max(0.0, 1.0 + _signed(level * self.max_delta, rng))
        kernel = np.float32([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0  # PIL's SMOOTH filter
        return _blend(img, cv2.filter2D(img, -1, kernel, borderType=BORDER), factor)


class Hue(LevelOp):
    """Rotate hue by up to ± `max_degrees` (stain colour differs between labs)."""

    def __init__(self, max_degrees: float = 30.0) -> None:
        self.max_degrees = float(max_degrees)

    def __call__(self, img, level, rng):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = int(round(_signed(level * self.max_degrees, rng) / 2.0))  # OpenCV hue is 0..179 (degrees / 2)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


class Gamma(LevelOp):
    """Gamma 2^(± `max_log2`·level): exposure differences between cameras."""

    def __init__(self, max_log2: float = 1.0) -> None:
        self.max_log2 = float(max_log2)

    def __call__(self, img, level, rng):
        gamma = 2.0 ** _signed(level * self.max_log2, rng)
        return _lut(img, 255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** gamma)
