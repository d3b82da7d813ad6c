"""Offline augmented copies (`data.copies=N`): the reference study's alternative to on-the-fly augmentation.

The training split plus N augmented copies of it (and optionally one intra-class mixed copy) are
written once to one memory-mapped .npy, keyed by the decoded cache, the augmentation pipeline, the
seed and N; training then reads them with no per-epoch augmentation. Built atomically (temp folder
→ rename), so concurrent runs or an interrupted build never leave a half-written cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bloodcell.errors import ConfigError

log = logging.getLogger(__name__)

COPIES_VERSION = 1


def copies_key(cache_folder: Path, transform, n: int, mixed: bool, seed: int) -> str:
    """Content key: the decoded cache's own key + the pipeline's full repr (ops and magnitudes) + seed + N."""
    spec = {"v": COPIES_VERSION, "cache": Path(cache_folder).name, "transform": repr(transform), "n": int(n),
            "mixed": bool(mixed), "seed": int(seed)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def intra_class_mix(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, alpha: float = 0.4) -> np.ndarray:
    """One mixed copy: each image blended with a random image of its own class, λ ~ Beta(α, α).

    Mixing within a class keeps every label exact (hard), so the copy can join an ordinary
    training set; cross-class CutMix/MixUp with soft labels is the on-the-fly `mix.*` option.
    """
    partner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        partner[idx] = rng.permutation(idx)
    lam = rng.beta(alpha, alpha, size=(len(labels), 1, 1, 1)).astype(np.float32)
    out = np.empty_like(images)
    for start in range(0, len(labels), 512):  # chunks keep float memory small
        s = slice(start, start + 512)
        mixed = lam[s] * images[s].astype(np.float32) + (1.0 - lam[s]) * images[partner[s]].astype(np.float32)
        out[s] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def build_copies(images_path: Path, labels: np.ndarray, transform, n: int, mixed: bool, seed: int,
                 cache_folder: Path) -> tuple[Path, np.ndarray]:
    """Return (images .npy, labels) of originals + N augmented copies (+ mixed copy), building them if absent."""
    if n < 1:
        raise ConfigError(f"data.copies={n}: must be ≥ 1 (0 switches offline copies off).")
    if transform is None:
        raise ConfigError("data.copies needs an augmentation to copy with; choose augment=heavy, pipeline, ... (not none).")
    if not hasattr(transform, "set_random_seed") or getattr(transform, "augmented", None) is not None:
        raise ConfigError("data.copies works with an Albumentations pipeline, not with augment.jsd.enabled=true; switch one off.")
    key = copies_key(cache_folder, transform, n, mixed, seed)
    final = Path(cache_folder).parent / "copies" / key
    if (final / "meta.json").is_file():
        return final / "images.npy", np.load(final / "labels.npy")
    t0 = time.perf_counter()
    originals = np.load(images_path, mmap_mode="r")
    count = len(labels) * (1 + n + int(mixed))
    tmp = final.parent / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(count, *originals.shape[1:]))
    out[: len(labels)] = originals
    transform.set_random_seed(seed)
    pos = len(labels)
    for _ in range(n):
        for i in range(len(labels)):
            out[pos + i] = transform(image=np.array(originals[i]))["image"]
        pos += len(labels)
    if mixed:
        out[pos:] = intra_class_mix(out[len(labels): 2 * len(labels)], labels, np.random.default_rng(seed))
    out.flush()
    del out
    all_labels = np.tile(labels, 1 + n + int(mixed))
    np.save(tmp / "labels.npy", all_labels)
    meta = {"version": COPIES_VERSION, "cache": str(cache_folder), "copies": n, "mixed": mixed, "seed": seed,
            "transform": repr(transform), "images": count, "build_seconds": round(time.perf_counter() - t0, 2)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same copies first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("materialised %d offline augmented copies (%d images) in %s (%.1fs)", n, count, final, meta["build_seconds"])
    return final / "images.npy", all_labels
