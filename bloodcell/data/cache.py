"""Decoded-image cache: one memory-mapped uint8 .npy per split, keyed by source and preprocessing.

Built once (decode → dedup → split → resize), then every epoch, worker and evaluation reads the
same memory-mapped file: no re-decoding, no per-worker copies.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloodcell.data.classes import CLASS_NAMES
from bloodcell.data.clean import deduplicate
from bloodcell.data.preprocess import Preprocess
from bloodcell.data.split import stratified_split
from bloodcell.data.table import SPLITS

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: keyed by the whole Preprocess (colour and scale normalisation)


@dataclass
class SplitArrays:
    """One split of the cache: images_path is a .npy to memory-map; labels and ids are in memory."""

    images_path: Path
    labels: np.ndarray
    ids: list[str]

    def images(self) -> np.ndarray:
        """The split's images, memory-mapped read-only (every worker shares the same pages)."""
        return np.load(self.images_path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class CacheSpec:
    """The preprocessing settings a decoded cache is keyed by and built with (the data.* keys of conf/data/_common.yaml)."""

    preprocess: Preprocess
    dedup: bool
    val_fraction: float
    test_fraction: float
    split_seed: int

    def key_fields(self) -> dict:
        """The settings as they enter the cache key (typed, so 0.1 and 0.10 give one key)."""
        return {"preprocess": self.preprocess.describe(), "dedup": bool(self.dedup),
                "val_fraction": float(self.val_fraction), "test_fraction": float(self.test_fraction), "split_seed": int(self.split_seed)}


def cache_key(source, spec: CacheSpec) -> str:
    """Content key of one source at one preprocessing: a changed file or setting builds a new cache."""
    key = {"v": CACHE_VERSION, "source": source.describe(), "fingerprint": source.fingerprint(), **spec.key_fields()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def build_cache(source, cache_dir: str | Path, spec: CacheSpec, allow_missing_classes: bool = False) -> Path:
    """Return the cache folder for this source+preprocessing, building it if absent (atomically)."""
    key = cache_key(source, spec)
    final = Path(cache_dir).expanduser().resolve() / key
    if (final / "meta.json").is_file():
        return final
    t0 = time.perf_counter()
    table = source.load(spec.preprocess, allow_missing_classes=allow_missing_classes)
    report = {"images_in": len(table), "in_class_duplicates_removed": 0, "cross_class_images_dropped": 0}
    if spec.dedup:
        table, report = deduplicate(table)
        if report["in_class_duplicates_removed"] or report["cross_class_images_dropped"]:
            log.warning(
                "removed %d in-class duplicate(s) and dropped %d image(s) filed under two classes",
                report["in_class_duplicates_removed"],
                report["cross_class_images_dropped"],
            )
    splits = (
        table.splits if table.splits is not None else stratified_split(table.labels, spec.val_fraction, spec.test_fraction, spec.split_seed)
    )
    tmp = final.parent / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    for split in SPLITS:
        idx = np.flatnonzero(splits == split)
        np.save(tmp / f"{split}_images.npy", np.ascontiguousarray(table.images[idx]))
        np.save(tmp / f"{split}_labels.npy", table.labels[idx])
        (tmp / f"{split}_ids.json").write_text(json.dumps([table.ids[i] for i in idx]))
        counts[split] = np.bincount(table.labels[idx], minlength=len(CLASS_NAMES)).tolist()
    meta = {
        "version": CACHE_VERSION,
        "source": source.describe(),
        "classes": list(CLASS_NAMES),
        "image_size": spec.preprocess.image_size,
        "resize_mode": spec.preprocess.resize_mode,
        "preprocess": spec.preprocess.describe(),
        "split_from_source": table.splits is not None,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
        "split_seed": spec.split_seed,
        "class_counts": counts,
        "dedup": report,
        "bad_files": [{"path": p, "reason": r} for p, r in table.bad_files],
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %d images at %d px in %s (%.1fs)", len(table), spec.preprocess.image_size, final, meta["build_seconds"])
    return final


def load_cache(folder: str | Path) -> tuple[dict, dict[str, SplitArrays]]:
    """(meta.json, the three splits) of a built cache folder; the images stay on disk until mapped."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {
        s: SplitArrays(folder / f"{s}_images.npy", np.load(folder / f"{s}_labels.npy"), json.loads((folder / f"{s}_ids.json").read_text()))
        for s in SPLITS
    }
    return meta, arrays
