"""Blood-smear corruptions at 5 severities: pure functions on HWC uint8 images.

Each corruption imitates something that goes wrong between the slide and the file: focus, stage
motion, camera noise, compression, low resolution, exposure, contrast, faded or shifted stain,
white balance, stain precipitate and air bubbles. Severity 1 is mild, 5 is harsh; spatial effects
scale with the image side (constants are given for 128 px). All randomness comes from the `rng`
argument, so a suite is reproducible from a seed.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _check(img: np.ndarray, severity: int) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"corruptions take HWC uint8 RGB images, got {img.dtype} {img.shape}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _scale(img: np.ndarray, px_at_128: float) -> float:
    """A length given for a 128 px image, scaled to this image's side (not below half, so tiny images still get damaged)."""
    return px_at_128 * max(min(img.shape[:2]), 64) / 128.0


def gaussian_noise(img, severity, rng):
    """Sensor noise (low light, high gain)."""
    sigma = (0.03, 0.05, 0.08, 0.12, 0.17)[severity - 1] * 255
    return _to_uint8(img.astype(np.float32) + rng.normal(0.0, sigma, img.shape))


def defocus_blur(img, severity, rng):
    """Out-of-focus objective: convolution with an anti-aliased disk (continuous radius)."""
    radius = _scale(img, (1.5, 2.2, 3.0, 4.0, 5.5)[severity - 1])
    r = int(np.ceil(radius + 0.5))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = np.clip(radius + 0.5 - np.sqrt(xx**2 + yy**2), 0.0, 1.0).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def motion_blur(img, severity, rng):
    """Stage or camera moving during exposure: a line kernel (continuous length) at a random angle."""
    length = max(1.0, _scale(img, (3, 5, 8, 12, 17)[severity - 1]))
    n = 2 * int(np.ceil(length / 2)) + 1
    t = np.abs(np.arange(n) - n // 2)
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = np.clip(length / 2 + 0.5 - t, 0.0, 1.0)
    angle = float(rng.uniform(0, 180))
    rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (n, n))
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def jpeg(img, severity, rng):
    """Lossy compression by a scanner or an image archive."""
    quality = (50, 30, 18, 10, 5)[severity - 1]
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def pixelate(img, severity, rng):
    """A low-resolution camera: area downsampling, nearest-neighbour upsampling."""
    h, w = img.shape[:2]
    f = (0.5, 0.4, 0.32, 0.25, 0.18)[severity - 1]
    small = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def brightness_up(img, severity, rng):
    """Over-exposure: a constant added to every channel."""
    delta = (0.08, 0.16, 0.25, 0.35, 0.45)[severity - 1] * 255
    return _to_uint8(img.astype(np.float32) + delta)


def brightness_down(img, severity, rng):
    """Under-exposure or a dim lamp: every channel scaled down."""
    gain = (0.85, 0.7, 0.55, 0.42, 0.3)[severity - 1]
    return _to_uint8(img.astype(np.float32) * gain)


def contrast_up(img, severity, rng):
    """Harsh contrast: distances from the mean grey stretched."""
    k = (1.3, 1.6, 2.0, 2.5, 3.2)[severity - 1]
    x = img.astype(np.float32)
    return _to_uint8((x - x.mean()) * k + x.mean())


def contrast_down(img, severity, rng):
    """Washed-out image (thick smear, stray light): distances from the mean grey shrunk."""
    k = (0.75, 0.55, 0.4, 0.28, 0.18)[severity - 1]
    x = img.astype(np.float32)
    return _to_uint8((x - x.mean()) * k + x.mean())


def _hsv(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)


def _rgb(hsv: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(_to_uint8(hsv), cv2.COLOR_HSV2RGB_FULL)


def saturation_down(img, severity, rng):
    """Faded or under-stained smear: colour saturation reduced."""
    hsv = _hsv(img)
    hsv[..., 1] *= (0.7, 0.5, 0.35, 0.22, 0.1)[severity - 1]
    return _rgb(hsv)


def hue_shift(img, severity, rng):
    """White balance or a different stain batch: hue rotated (direction random)."""
    degrees = (8, 16, 28, 44, 64)[severity - 1] * (1 if rng.random() < 0.5 else -1)
    hsv = _hsv(img)
    hsv[..., 0] = np.mod(hsv[..., 0] + degrees * 256.0 / 360.0, 256.0)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


def stain_shift(img, severity, rng):
    """Stain concentration differing per dye: optical densities scaled per channel (Beer–Lambert)."""
    strength = (0.2, 0.35, 0.5, 0.7, 0.95)[severity - 1]
    direction = rng.uniform(-1.0, 1.0, 3)
    direction /= max(np.abs(direction).max(), 1e-6)
    od = -np.log((img.astype(np.float32) + 1.0) / 256.0)
    od *= np.exp(strength * direction).astype(np.float32)
    return _to_uint8(256.0 * np.exp(-od) - 1.0)


def _blob_positions(img: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int, float, float]]:
    """(x, y, radius, darkness) of `count` blobs; drawn from rng in order, so more blobs extend fewer."""
    h, w = img.shape[:2]
    out = []
    for _ in range(count):
        out.append((int(rng.integers(0, w)), int(rng.integers(0, h)), float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.5, 0.9))))
    return out


def stain_deposits(img, severity, rng):
    """Stain precipitate: dark purple specks scattered over the field."""
    count = (3, 6, 10, 15, 22)[severity - 1]
    out = img.astype(np.float32)
    colour = np.array([70.0, 30.0, 110.0], np.float32)
    for x, y, r, dark in _blob_positions(img, count, rng):
        mask = np.zeros(img.shape[:2], np.float32)
        cv2.circle(mask, (x, y), max(1, int(round(_scale(img, 2.5 * r)))), 1.0, -1, lineType=cv2.LINE_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), _scale(img, 0.6))[..., None] * dark
        out = out * (1 - mask) + colour * mask
    return _to_uint8(out)


def bubbles(img, severity, rng):
    """Air bubbles under the cover slip: bright discs with a dark refractive rim."""
    count = (1, 2, 3, 5, 7)[severity - 1]
    out = img.astype(np.float32)
    for x, y, r, strength in _blob_positions(img, count, rng):
        radius = max(2, int(round(_scale(img, 10 * r))))
        inner = np.zeros(img.shape[:2], np.float32)
        rim = np.zeros(img.shape[:2], np.float32)
        cv2.circle(inner, (x, y), radius, 1.0, -1, lineType=cv2.LINE_AA)
        cv2.circle(rim, (x, y), radius, 1.0, max(1, int(round(_scale(img, 1.5)))), lineType=cv2.LINE_AA)
        inner = inner[..., None] * 0.6 * strength
        rim = rim[..., None] * strength
        out = out * (1 - inner) + 245.0 * inner
        out = out * (1 - rim) + 40.0 * rim
    return _to_uint8(out)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "jpeg": jpeg,
    "pixelate": pixelate,
    "brightness_up": brightness_up,
    "brightness_down": brightness_down,
    "contrast_up": contrast_up,
    "contrast_down": contrast_down,
    "saturation_down": saturation_down,
    "hue_shift": hue_shift,
    "stain_shift": stain_shift,
    "stain_deposits": stain_deposits,
    "bubbles": bubbles,
}


def corrupt(img: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption `name` at `severity` (1–5); returns a new HWC uint8 image of the same shape."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; choose from {sorted(CORRUPTIONS)}")
    _check(img, severity)
    out = CORRUPTIONS[name](img, severity, rng)
    assert out.shape == img.shape and out.dtype == np.uint8, f"{name} changed shape/dtype"
    return out
