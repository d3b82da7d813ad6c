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
from bloodcell.data.split import stratified_split
from bloodcell.data.table import SPLITS

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class SplitArrays:
    """One split of the cache: images_path is a .npy to memory-map; labels and ids are in memory."""

    images_path: Path
    labels: np.ndarray
    ids: list[str]

    def images(self) -> np.ndarray:
        return np.load(self.images_path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.labels)


def cache_key(source, image_size: int, resize_mode: str, dedup: bool, val_fraction: float, test_fraction: float, split_seed: int) -> str:
    spec = {
        "v": CACHE_VERSION,
        "source": source.describe(),
        "fingerprint": source.fingerprint(),
        "image_size": int(image_size),
        "resize_mode": resize_mode,
        "dedup": bool(dedup),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "split_seed": int(split_seed),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def build_cache(
    source,
    cache_dir: str | Path,
    image_size: int,
    resize_mode: str = "center_crop",
    dedup: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 42,
    allow_missing_classes: bool = False,
) -> Path:
    """Return the cache folder for this source+preprocessing, building it if absent (atomically)."""
    key = cache_key(source, image_size, resize_mode, dedup, val_fraction, test_fraction, split_seed)
    final = Path(cache_dir).expanduser().resolve() / key
    if (final / "meta.json").is_file():
        return final
    t0 = time.perf_counter()
    table = source.load(image_size, resize_mode, allow_missing_classes=allow_missing_classes)
    report = {"images_in": len(table), "in_class_duplicates_removed": 0, "cross_class_images_dropped": 0}
    if dedup:
        table, report = deduplicate(table)
        if report["in_class_duplicates_removed"] or report["cross_class_images_dropped"]:
            log.warning(
                "removed %d in-class duplicate(s) and dropped %d image(s) filed under two classes",
                report["in_class_duplicates_removed"],
                report["cross_class_images_dropped"],
            )
    splits = table.splits if table.splits is not None else stratified_split(table.labels, val_fraction, test_fraction, split_seed)
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
        "image_size": int(image_size),
        "resize_mode": resize_mode,
        "split_from_source": table.splits is not None,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
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
    log.info("cached %d images at %d px in %s (%.1fs)", len(table), image_size, final, meta["build_seconds"])
    return final


def load_cache(folder: str | Path) -> tuple[dict, dict[str, SplitArrays]]:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {
        s: SplitArrays(folder / f"{s}_images.npy", np.load(folder / f"{s}_labels.npy"), json.loads((folder / f"{s}_ids.json").read_text()))
        for s in SPLITS
    }
    return meta, arrays
