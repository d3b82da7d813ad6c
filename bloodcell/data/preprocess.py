"""Preprocessing that travels with the model: a decoded image of any size → the network's size×size uint8 input.

One `Preprocess` (built from `data.image_size`, `data.resize_mode` and `data.preprocess`) turns every image into
model input the same way in cache building (training and evaluation sets), folder prediction, export and the web
page; checkpoints store it, so a model is always fed what it was trained on. Steps, in order:

1. colour (`preprocess.colour`): `none`; `white_balance` (the smear background, the one content-free reference
   in every image, scaled to a reference colour); `reinhard` and `macenko` through torchstain (LAB statistics /
   an H&E stain matrix estimated per image and mapped to a reference).
2. geometry: `preprocess.scale=none` crops/squashes/pads to a square (`resize_mode`); `scale=cell` is the
   magnification normaliser: find the stained nucleus nearest the centre, centre the crop on it and zoom so that
   it spans `cell_fraction` of the side. Other labs image at other magnifications (the cross-lab folders show
   cells at ~0.7× the PBC size); absolute size in pixels does not transfer, relative size (to the red cells
   around it) does, and the network still sees those. Shrinking uses `preprocess.downsample`: `box` (area average,
   what every cache was built with) or `bicubic` (PIL's antialiased cubic kernel: wider, so at a non-integer factor
   such as 128 → 96 px less of the finest detail aliases into the result). Measured (issue 12, two seeds, 8 epochs):
   zheng2 0.54 vs BOX's 0.475 at the same clean accuracy (0.974); trained BICUBIC but tested BOX, clean was 0.977.
3. context (`preprocess.context=suppress`): fade the field outside a disc around the nucleus to the background
   colour, so the red-cell field (which differs between labs and patients) cannot serve as a shortcut.
4. re-encoding (`preprocess.reencode=webp|jpeg` at `reencode_quality`): a lossy encode/decode of the final
   image, so every image loses its finest detail (sensor noise, sharpening, its archive's own compression) the
   same way whatever its source (e.g. a lab whose archive is lossy). Measured (issue 12): a WebP-85 *training* copy
   transferred better to another lab, but re-encoding the test images as well gave that back (zheng2 0.58 → 0.53, clean
   0.969 → 0.976); the training-only form is `augment.train_webp`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from bloodcell.config import require_keys
from bloodcell.data.images import DOWNSAMPLE_FILTERS, REENCODE_FORMATS, RESIZE_MODES, reencode, resize_image
from bloodcell.errors import ConfigError

SCALE_MODES = ("none", "cell")
CONTEXT_MODES = ("keep", "suppress")
COLOUR_MODES = ("none", "white_balance", "reinhard", "macenko")
PREPROCESS_KEYS = ("scale", "cell_fraction", "zoom_range", "context", "context_diameter", "colour", "background", "lab_reference",
                   "reencode", "reencode_quality", "downsample")
_OD_TABLE = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)  # optical density of each 8-bit level


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximal between-class variance), for float data cv2 cannot take."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0 / w0 - (m0[-1] - m0) / w1) ** 2 * w0 * w1
    return float(centers[int(np.nanargmax(between[:-1]))])


def optical_density(img: np.ndarray) -> np.ndarray:
    """Per-pixel summed optical density (Beer–Lambert: proportional to the amount of stain), H×W float32."""
    return cv2.LUT(img, _OD_TABLE).sum(axis=2)


@dataclass(frozen=True)
class NucleusBox:
    """Where the white cell's nucleus is: centre (row, col) and extent (longest side of its bounding box), pixels."""

    cy: float
    cx: float
    extent: float


def find_nucleus(img: np.ndarray) -> NucleusBox | None:
    """The stained nucleus nearest the image centre (with its lobes), or None when nothing is stained.

    Two Otsu thresholds on optical density: background vs stained, then (within stained) red cells and
    cytoplasm vs nucleus, the darkest structure in a May-Grünwald-Giemsa / Wright smear. The main component
    is the largest weighted towards the centre; components near it (segmented neutrophil lobes) join it.
    """
    h, w = img.shape[:2]
    s = min(h, w)
    od = cv2.GaussianBlur(optical_density(img), (0, 0), max(0.5, s / 256))
    stained = od[od > otsu_threshold(od)]
    if stained.size < 16:
        return None
    mask = (od > otsu_threshold(stained)).astype(np.uint8)
    r = max(1, s // 128)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return None
    areas, cents = stats[1:, cv2.CC_STAT_AREA].astype(np.float64), centroids[1:, ::-1]  # (row, col)
    dist = np.hypot(cents[:, 0] - h / 2, cents[:, 1] - w / 2) / s
    main = int(np.argmax(areas * np.exp(-((dist / 0.25) ** 2))))
    near = np.hypot(*(cents - cents[main]).T) / s < 0.25
    keep = np.flatnonzero(near & (areas > 0.15 * areas[main]))
    top = stats[1:, cv2.CC_STAT_TOP][keep]
    left = stats[1:, cv2.CC_STAT_LEFT][keep]
    bottom = top + stats[1:, cv2.CC_STAT_HEIGHT][keep]
    right = left + stats[1:, cv2.CC_STAT_WIDTH][keep]
    y0, y1, x0, x1 = top.min(), bottom.max(), left.min(), right.max()
    return NucleusBox(cy=(y0 + y1) / 2, cx=(x0 + x1) / 2, extent=float(max(y1 - y0, x1 - x0)))


def cell_crop(img: np.ndarray, size: int, cell_fraction: float, zoom_range: tuple[float, float],
              downsample: str) -> np.ndarray:
    """size×size crop centred on the nucleus, zoomed so it spans `cell_fraction` of the side (zoom limited)."""
    h, w = img.shape[:2]
    s = min(h, w)
    box = find_nucleus(img)
    if box is None:
        return resize_image(img, size, "center_crop", downsample)
    side = float(np.clip(box.extent / cell_fraction, s / zoom_range[1], s / zoom_range[0]))
    side_px = max(2, int(round(side)))
    # keep the crop inside the image where it fits (fewer mirrored pixels); the nucleus stays inside since side > extent
    cy = np.clip(box.cy, side / 2, h - side / 2) if side <= h else box.cy
    cx = np.clip(box.cx, side / 2, w - side / 2) if side <= w else box.cx
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    pad = max(0, -top, -left, top + side_px - h, left + side_px - w)
    if pad:
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        top, left = top + pad, left + pad
    return resize_image(img[top : top + side_px, left : left + side_px], size, "squash", downsample)


def background_colour(img: np.ndarray) -> np.ndarray:
    """The smear background's RGB: the median of the 10 % least stained pixels (float32, 3 values)."""
    od = optical_density(img)
    return np.median(img[od <= np.percentile(od, 10)], axis=0).astype(np.float32)


def suppress_context(img: np.ndarray, background: np.ndarray, diameter: float) -> np.ndarray:
    """Fade everything outside a disc around the nucleus (diameter × nucleus extent) to the background colour.

    The class is a property of the white cell; the field around it (red-cell density and pallor, platelets, debris)
    differs between labs and patients and is a shortcut a network will take. A soft edge (±15 % of the radius)
    keeps the cell's own border. No nucleus found: the image is returned as is.
    """
    box = find_nucleus(img)
    if box is None:
        return img
    h, w = img.shape[:2]
    radius = diameter * box.extent / 2
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - box.cy, xx - box.cx)
    keep = np.clip((1.15 * radius - dist) / (0.3 * radius), 0.0, 1.0)[..., None].astype(np.float32)
    return (img.astype(np.float32) * keep + background * (1.0 - keep) + 0.5).astype(np.uint8)


def white_balance(img: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """Scale each channel so the smear background (the 10 % least stained pixels) gets the reference colour."""
    bg = background_colour(img)
    gain = np.asarray(background, dtype=np.float32) / np.maximum(bg, 1.0)
    return np.clip(img.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def reinhard(img: np.ndarray, lab_reference: tuple[float, ...]) -> np.ndarray:
    """torchstain's Reinhard normaliser: per-image LAB means/stds mapped to the reference (3 means, 3 stds)."""
    from torchstain.numpy.normalizers import NumpyReinhardNormalizer

    norm = NumpyReinhardNormalizer()
    norm.target_means = np.asarray(lab_reference[:3], dtype=np.float32)
    norm.target_stds = np.asarray(lab_reference[3:], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = norm.normalize(img)
    return np.ascontiguousarray(out) if np.isfinite(out).all() else img


def macenko(img: np.ndarray) -> np.ndarray:
    """torchstain's Macenko normaliser to its H&E reference; an image whose stain matrix cannot be estimated stays as is."""
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = NumpyMacenkoNormalizer().normalize(img, stains=False)[0]
    except (np.linalg.LinAlgError, ValueError, IndexError):
        return img
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class Preprocess:
    """Decoded RGB uint8 image (any size) → image_size × image_size uint8; hashable, so it keys caches and batches."""

    image_size: int
    resize_mode: str
    scale: str
    cell_fraction: float
    zoom_range: tuple[float, float]
    context: str
    context_diameter: float
    colour: str
    background: tuple[float, float, float]
    lab_reference: tuple[float, ...]
    reencode: str
    reencode_quality: int
    downsample: str  # last: describe() leaves it out at "box", so existing cache keys and checkpoint metadata stay valid

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"data.resize_mode={self.resize_mode!r}: use one of {RESIZE_MODES}.")
        if self.scale not in SCALE_MODES:
            raise ConfigError(f"data.preprocess.scale={self.scale!r}: use one of {SCALE_MODES}.")
        if self.context not in CONTEXT_MODES or self.context_diameter <= 0:
            raise ConfigError(f"data.preprocess.context={self.context!r} / context_diameter={self.context_diameter}: "
                              f"use one of {CONTEXT_MODES} and a diameter > 0.")
        if self.colour not in COLOUR_MODES:
            raise ConfigError(f"data.preprocess.colour={self.colour!r}: use one of {COLOUR_MODES}.")
        lo, hi = self.zoom_range
        if not (0 < lo <= 1 <= hi and 0 < self.cell_fraction < 1):
            raise ConfigError(
                f"data.preprocess.zoom_range={list(self.zoom_range)} / cell_fraction={self.cell_fraction}: "
                "need 0 < min ≤ 1 ≤ max and 0 < cell_fraction < 1."
            )
        if self.reencode not in REENCODE_FORMATS or not 1 <= self.reencode_quality <= 100:
            raise ConfigError(f"data.preprocess.reencode={self.reencode!r} / reencode_quality={self.reencode_quality}: "
                              f"use one of {REENCODE_FORMATS} and a quality from 1 to 100.")
        if self.downsample not in DOWNSAMPLE_FILTERS:
            raise ConfigError(f"data.preprocess.downsample={self.downsample!r}: use one of {tuple(DOWNSAMPLE_FILTERS)}.")
        if len(self.background) != 3 or len(self.lab_reference) != 6:
            raise ConfigError("data.preprocess.background needs 3 numbers (RGB) and data.preprocess.lab_reference 6 (LAB means, LAB stds).")

    @classmethod
    def from_data_cfg(cls, image_size: int, resize_mode: str, preprocess: Mapping[str, Any]) -> Preprocess:
        """From the data config's keys (`data.image_size`, `data.resize_mode`, `data.preprocess.*`)."""
        p = require_keys(preprocess, PREPROCESS_KEYS, "data.preprocess")
        return cls(
            image_size=int(image_size), resize_mode=str(resize_mode), scale=str(p["scale"]), cell_fraction=float(p["cell_fraction"]),
            zoom_range=tuple(float(z) for z in p["zoom_range"]), context=str(p["context"]), context_diameter=float(p["context_diameter"]),
            colour=str(p["colour"]),
            background=tuple(float(v) for v in p["background"]), lab_reference=tuple(float(v) for v in p["lab_reference"]),
            reencode=str(p["reencode"]), reencode_quality=int(p["reencode_quality"]), downsample=str(p["downsample"]),
        )

    @classmethod
    def resize_only(cls, image_size: int, resize_mode: str = "center_crop") -> Preprocess:
        """Plain resizing with conf/data/_common.yaml's preprocess settings (sources and tests without a data config)."""
        from bloodcell.config import yaml_defaults

        return cls.from_data_cfg(image_size, resize_mode, yaml_defaults("data/_common.yaml", ["preprocess"])["preprocess"])

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> Preprocess:
        """Back from `describe()` (export metadata); settings it leaves out (options that were off) are the defaults."""
        from bloodcell.config import yaml_defaults

        plain = dict(described)
        image_size, resize_mode = plain.pop("image_size"), plain.pop("resize_mode")
        return cls.from_data_cfg(image_size, resize_mode, {**yaml_defaults("data/_common.yaml", ["preprocess"])["preprocess"], **plain})

    def describe(self) -> dict:
        """Plain settings (cache key, checkpoint metadata, metrics.json)."""
        plain = dataclasses.asdict(self)
        if self.reencode == "none":  # off: the settings caches and checkpoints had before the option existed (same keys)
            del plain["reencode"], plain["reencode_quality"]
        if self.downsample == "box":  # the same for the resampling filter
            del plain["downsample"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}

    def colour_step(self, img: np.ndarray) -> np.ndarray:
        """The colour normalisation alone (full resolution, before the geometry)."""
        if self.colour == "white_balance":
            return white_balance(img, self.background)
        if self.colour == "reinhard":
            return reinhard(img, self.lab_reference)
        if self.colour == "macenko":
            return macenko(img)
        return img

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """One decoded H×W×3 uint8 image → the network's input image."""
        img = self.colour_step(img)
        background = background_colour(img) if self.context == "suppress" else None  # from the whole field, before cropping
        if self.scale == "cell":
            out = cell_crop(img, self.image_size, self.cell_fraction, self.zoom_range, self.downsample)
        else:
            out = resize_image(img, self.image_size, self.resize_mode, self.downsample)
        if background is not None:
            out = suppress_context(out, background, self.context_diameter)
        return reencode(out, self.reencode, self.reencode_quality)
