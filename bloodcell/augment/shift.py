"""A seeded "other lab" copy of a test split: strong stain/colour, magnification, blur and camera shift.

Used by `bloodcell.evaluation.compare` when no external benchmark set is given. The shift is one
consistent direction for the whole set (hue-rotated, paler stain, ~1.35× magnification, defocus,
uneven light, JPEG, noise), as images from another lab would be, not a random draw per image
around the training distribution. It is built from the same op families as `augment=pipeline`
(a reason to prefer an independent benchmark set when one exists), partly outside its ranges.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from bloodcell.augment.builder import build_transform
from bloodcell.errors import BloodcellError

SHIFT_VERSION = 1

LAB_SHIFT_OPS: list[dict] = [
    # another magnification: cells 1.25–1.45× larger than in training images
    {"_target_": "albumentations.Affine", "scale": [1.25, 1.45], "rotate": [-180, 180], "border_mode": 4, "p": 1.0},
    # another stain batch/protocol: hue rotated one way (towards magenta), paler and brighter
    {"_target_": "albumentations.HueSaturationValue", "hue_shift_limit": [12, 22], "sat_shift_limit": [-45, -25],
     "val_shift_limit": [5, 15], "p": 1.0},
    {"_target_": "bloodcell.augment.StainJitter", "alpha": 0.25, "beta": 0.1, "p": 1.0},
    # another microscope: uneven illumination and defocus
    {"_target_": "albumentations.Illumination", "mode": "linear", "intensity_range": [0.1, 0.2], "p": 0.7},
    {"_target_": "albumentations.OneOf", "p": 0.8, "transforms": [
        {"_target_": "albumentations.Defocus", "radius": [2, 3], "alias_blur": [0.1, 0.3], "p": 1.0},
        {"_target_": "albumentations.GaussianBlur", "blur_limit": [5, 5], "p": 1.0}]},
    # another camera and storage
    {"_target_": "albumentations.ImageCompression", "quality_range": [30, 50], "p": 0.6},
    {"_target_": "albumentations.GaussNoise", "std_range": [0.03, 0.06], "p": 0.5},
]


def shift_spec(source_cache: str, split: str, seed: int) -> dict:
    """Everything the shifted copy depends on (its cache key): version, source cache, split, seed, ops."""
    return {"version": SHIFT_VERSION, "cache": source_cache, "split": split, "seed": int(seed), "ops": LAB_SHIFT_OPS}


def write_shifted_split(images: np.ndarray, labels: np.ndarray, classes: list[str], out_dir: Path, spec: dict) -> Path:
    """Write the shifted images as out_dir/<class>/<index>.png (a `data=folder` source) + shift.json.

    An existing folder is reused only when it was made from the same spec; otherwise refused
    (never overwritten).
    """
    out_dir = Path(out_dir)
    meta = out_dir / "shift.json"
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    if out_dir.exists() and any(out_dir.iterdir()):
        if meta.is_file() and json.loads(meta.read_text()).get("key") == key:
            return out_dir
        raise BloodcellError(
            f"{out_dir} exists and was not made from this shift spec; refusing to overwrite it. Choose another output folder."
        )
    transform = build_transform(spec["ops"], seed=spec["seed"])
    for c in np.unique(labels):
        (out_dir / classes[int(c)]).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        shifted = transform(image=np.array(img))["image"]
        cv2.imwrite(str(out_dir / classes[int(label)] / f"{i:06d}.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    meta.write_text(json.dumps({**spec, "key": key, "images": int(len(labels))}, indent=1))
    return out_dir
