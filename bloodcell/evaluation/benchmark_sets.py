"""Benchmark sets built from one split, reproducible byte for byte from a seed.

    python -m bloodcell.tools.benchmark_sets data=pbc128 data.image_size=128 out=bench/pbc128 seed=0

writes, in AN2DL npz layout (`images`, `labels`, `class_names`, `source_ids`) so that
`data=npz data.path=FILE` reads any of them through the ordinary data path:
  clean.npz                       the split itself (a sanity check: its accuracy equals the split's)
  bmk.npz                         each image once through the randomized chain `bmk.chain` (conf/bmk/)
  corruptions/<name>_s<k>.npz     every corruption of corruptions.py at every severity
  manifest.json                   seed, source, split, chain, corruption list, SHA-256 of every file

Every random draw is seeded per (seed, set, image index), so one image's result does not depend on
how many others there are. The bytes are identical across runs on the same library versions
(numpy, OpenCV, Albumentations are recorded in the manifest).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.config import check_trusted_targets, to_plain
from bloodcell.errors import ConfigError
from bloodcell.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BMK_SEED_TAG = 1_000_003  # separates the Bmk stream from the corruption streams


def write_npz_deterministic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """An uncompressed .npz readable by np.load, with fixed zip timestamps (np.savez stamps the clock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)
    return path


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, streamed (the manifest proves byte-for-byte reproducibility)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_seed(seed: int, stream: int, index: int) -> int:
    """A 32-bit seed for one image of one set, independent of every other image."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])


def apply_chain(images: np.ndarray, chain: Any, seed: int) -> np.ndarray:
    """Each image once through the Albumentations chain, re-seeded per image (shape/dtype kept)."""
    from bloodcell.augment.builder import build_transform

    transform = build_transform(chain, seed=seed)
    if transform is None:
        raise ConfigError("bmk.chain is empty; give at least one augmentation op (see conf/bmk/strong.yaml).")
    out = np.empty_like(images)
    for i in range(len(images)):
        transform.set_random_seed(image_seed(seed, BMK_SEED_TAG, i))
        img = transform(image=np.array(images[i]))["image"]
        if img.shape != images[i].shape or img.dtype != np.uint8:
            raise ConfigError(
                f"bmk.chain changed an image from {images[i].shape} uint8 to {img.shape} {img.dtype}; use ops that keep size and dtype."
            )
        out[i] = img
    return out


def apply_corruption(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """One corruption at one severity on every image, each image seeded by its own index."""
    stream = list(CORRUPTIONS).index(name) * 10 + severity
    return np.stack(
        [corrupt(np.asarray(img), name, severity, np.random.default_rng(image_seed(seed, stream, i))) for i, img in enumerate(images)]
    )


def load_split(data_cfg: Any, split: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str], dict]:
    """Images (N×S×S×3 uint8), labels, ids, class names and source description of one split, through the data path."""
    from bloodcell.data.datamodule import datamodule_from_cfg

    dm = datamodule_from_cfg({**to_plain(data_cfg), "num_workers": 0})
    dm.prepare_data()
    dm.setup("test")
    ds = dm.dataset(split)
    images = np.ascontiguousarray(ds.images[ds.indices])
    return images, ds.labels[ds.indices], dm.ids(split), list(dm.classes), {"source": dm.source.describe(), "image_size": dm.image_size}


def _set_arrays(images: np.ndarray, labels: np.ndarray, ids: list[str], classes: list[str]) -> dict[str, np.ndarray]:
    return {"images": images, "labels": labels.astype(np.int64), "class_names": np.array(classes), "source_ids": np.array(ids)}


def resolve_corruptions(names: Any) -> list[str]:
    """`all`, one name or a list → validated corruption names (unknown names stop with the choices)."""
    if names in (None, "all"):
        return list(CORRUPTIONS)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"corruptions={unknown} unknown; choose from {list(CORRUPTIONS)} or 'all'.")
    return names


@dataclass(frozen=True)
class BenchmarkSpec:
    """What to build from a split (the keys of conf/benchmark_sets.yaml; their defaults live there)."""

    split: str
    seed: int
    chain: Any  # the Bmk chain (conf/bmk/<name>.yaml `chain`); empty: no bmk.npz
    corruptions: Any  # "all" or a list of names from corruptions.py
    severities: Sequence[int]
    overwrite: bool

    @classmethod
    def from_cfg(cls, cfg: Any) -> BenchmarkSpec:
        """From a composed benchmark_sets config."""
        return cls(
            split=str(cfg.split),
            seed=int(cfg.seed),
            chain=to_plain(cfg.bmk.chain),
            corruptions=to_plain(cfg.corruptions),
            severities=[int(s) for s in cfg.severities],
            overwrite=bool(cfg.overwrite),
        )


def source_data_cfg(data_cfg: Any, ckpt: str | None) -> Any:
    """The data config to build from: the given one, or a checkpoint's own (its source and split), checked as untrusted."""
    if not data_cfg and ckpt:
        from bloodcell.checkpoint import read_checkpoint

        data_cfg = read_checkpoint(ckpt)["hyper_parameters"].get("data") or None
        check_trusted_targets(data_cfg, f"ckpt={ckpt} data config")
    if not data_cfg:
        raise ConfigError("no data to build from: pass data=<source> (e.g. data=pbc128) or ckpt=PATH to use a checkpoint's data and split.")
    return data_cfg


def build_benchmark_sets(data_cfg: Any, out: str | Path, spec: BenchmarkSpec) -> dict:
    """Write clean/Bmk/corruption sets of `spec.split` into `out`; returns the manifest."""
    if out in (None, "", "???"):
        raise ConfigError("out is required: the folder to write the benchmark sets into, e.g. out=bench/pbc128")
    out = Path(out).expanduser().resolve()
    if (out / MANIFEST).exists() and not spec.overwrite:
        raise ConfigError(f"out={out} already holds benchmark sets ({MANIFEST}); choose another folder or pass overwrite=true.")
    split, seed, chain = spec.split, spec.seed, spec.chain
    names = resolve_corruptions(spec.corruptions)
    severities = [int(s) for s in spec.severities]
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ConfigError(f"severities={bad} invalid; use values in {list(SEVERITIES)}.")
    images, labels, ids, classes, info = load_split(data_cfg, split)
    log.info("building benchmark sets from %d %s images (%s) into %s", len(images), split, info["source"], out)
    files: dict[str, str] = {}

    def save(rel: str, imgs: np.ndarray) -> None:
        path = write_npz_deterministic(out / rel, _set_arrays(imgs, labels, ids, classes))
        files[rel] = sha256_file(path)

    save("clean.npz", images)
    if chain:
        save("bmk.npz", apply_chain(images, chain, seed))
    for name in names:
        for sev in severities:
            save(f"corruptions/{name}_s{sev}.npz", apply_corruption(images, name, sev, seed))
        log.info("corruption %s done", name)
    import albumentations
    import cv2

    manifest = {
        "seed": int(seed),
        "split": split,
        **info,
        "n": int(len(images)),
        "classes": classes,
        "bmk_chain": to_plain(chain),
        "corruptions": names,
        "severities": severities,
        "files": files,
        "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "albumentations": albumentations.__version__},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("wrote %d benchmark files and %s", len(files), out / MANIFEST)
    return manifest


def read_manifest(folder: str | Path) -> tuple[Path, dict]:
    """(folder, manifest) of a built benchmark folder; a folder without one says how to build it."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / MANIFEST).is_file():
        raise ConfigError(
            f"benchmark_dir={folder} has no {MANIFEST}; build it first: python -m bloodcell.tools.benchmark_sets data=... out={folder}"
        )
    return folder, json.loads((folder / MANIFEST).read_text())
