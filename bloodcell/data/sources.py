"""Data sources: a class-per-folder tree, an npz file (AN2DL or MedMNIST layout), BloodMNIST.

Each source knows how to fingerprint itself (for the cache key) and how to load an ImageTable at a
given size. Everything after loading (dedup, split, cache, Dataset) is shared.
"""
from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bloodcell.data.classes import CLASS_NAMES, canonical_class, map_class_names
from bloodcell.data.images import decode_file, pixel_hash, visible_files
from bloodcell.data.preprocess import Preprocess
from bloodcell.data.table import SPLITS, ImageTable
from bloodcell.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BAD_FILE_POLICIES = ("warn", "fail")


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def as_preprocess(preprocess: Preprocess | int) -> Preprocess:
    """A Preprocess as given, or plain centre-crop resizing to `preprocess` pixels (an int)."""
    return preprocess if isinstance(preprocess, Preprocess) else Preprocess.resize_only(int(preprocess))


class FolderSource:
    """`root/<class>/**/<image>`: any common format and size; bad files reported by path."""

    def __init__(self, root: str, on_bad_file: str = "warn", num_workers: int | None = None) -> None:
        if on_bad_file not in BAD_FILE_POLICIES:
            raise ConfigError(f"data.on_bad_file={on_bad_file!r}: use one of {BAD_FILE_POLICIES}")
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self.on_bad_file = on_bad_file
        self.num_workers = num_workers or min(8, os.cpu_count() or 1)

    def __repr__(self) -> str:
        return f"FolderSource({self.root})"

    def describe(self) -> dict:
        return {"type": "folder", "root": str(self.root)}

    def _class_dirs(self) -> list[Path]:
        if not self.root.exists():
            raise DataError(f"data.root={self.root} does not exist; point data.root at a folder with one sub-folder per class.")
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root} is a file, not a folder; use data=npz data.path=... for npz files.")
        dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dirs:
            raise DataError(
                f"data.root={self.root} has no class sub-folders; expected one folder per class, e.g. "
                f"{self.root}/basophil/*.jpg (classes: {', '.join(CLASS_NAMES)})."
            )
        return dirs

    def list_files(self) -> list[tuple[Path, str]]:
        """(file, class folder name) for every non-hidden file under the class folders, sorted."""
        return [(f, d.name) for d in self._class_dirs() for f in visible_files(d)]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f, cls in self.list_files():
            h.update(f"{cls}|{_file_fingerprint(f)}\n".encode())
        return h.hexdigest()

    def load(self, preprocess: Preprocess | int, allow_missing_classes: bool = False) -> ImageTable:
        """Decode every file and turn it into model input (`preprocess`, or plain resizing to that many pixels)."""
        preprocess = as_preprocess(preprocess)
        image_size = preprocess.image_size
        files = self.list_files()
        folder_names = [d.name for d in self._class_dirs()]
        mapping = map_class_names(folder_names, where=f"data.root={self.root}", allow_missing=allow_missing_classes)
        per_class: dict[str, int] = {name: 0 for name in folder_names}
        for _, cls in files:
            per_class[cls] += 1
        empty = [n for n, k in per_class.items() if k == 0]
        if empty:
            raise DataError(f"class folder(s) {[str(self.root / n) for n in empty]} contain no files; add images or remove the folder.")

        images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
        ok = np.zeros(len(files), dtype=bool)
        hashes = [""] * len(files)
        bad: list[tuple[str, str]] = []

        def work(i: int) -> tuple[int, str | None]:
            arr, why = decode_file(files[i][0])
            if arr is None:
                return i, why
            hashes[i] = pixel_hash(arr)
            images[i] = preprocess(arr)
            return i, None

        with ThreadPoolExecutor(self.num_workers) as pool:
            it = pool.map(work, range(len(files)), chunksize=64)
            for i, err in tqdm(
                it, total=len(files), desc=f"decode {self.root.name}", unit="img", mininterval=1.0, disable=len(files) < 500
            ):
                if err is None:
                    ok[i] = True
                else:
                    bad.append((str(files[i][0]), err))
        if bad:
            listing = "\n".join(f"  {p}: {why}" for p, why in bad[:50])
            more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
            if self.on_bad_file == "fail":
                raise DataError(
                    f"{len(bad)} unreadable file(s) under {self.root} (data.on_bad_file=fail):\n{listing}{more}\n"
                    "Fix or remove them, or set data.on_bad_file=warn to skip them."
                )
            log.warning("skipping %d unreadable file(s) under %s:\n%s%s", len(bad), self.root, listing, more)
        labels = np.array([mapping[cls] for _, cls in files], dtype=np.int64)
        idx = np.flatnonzero(ok)
        usable = {CLASS_NAMES[c] for c in labels[idx]}
        lost = sorted({CLASS_NAMES[mapping[n]] for n in folder_names} - usable)
        if lost:
            raise DataError(f"class(es) {lost} under {self.root} have no readable image; see the unreadable files listed above.")
        return ImageTable(
            images=images[idx],
            labels=labels[idx],
            ids=[str(files[i][0]) for i in idx],
            hashes=[hashes[i] for i in idx],
            splits=None,
            bad_files=bad,
        )


def _check_images(arr: np.ndarray, key: str, where: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise DataError(
            f"{where}: '{key}' has dtype {arr.dtype}; expected uint8 pixels 0-255 "
            "(convert with (x * 255).round().astype('uint8') if it holds floats in [0, 1])."
        )
    if arr.ndim == 3:  # grayscale N×H×W
        arr = np.repeat(arr[..., None], 3, axis=3)
    elif arr.ndim == 4 and arr.shape[3] == 1:
        arr = np.repeat(arr, 3, axis=3)
    if arr.ndim != 4 or arr.shape[3] != 3 or min(arr.shape) == 0:
        raise DataError(f"{where}: '{key}' has shape {arr.shape}; expected N×H×W×3 (RGB) or N×H×W (grayscale), N ≥ 1.")
    return arr


def _check_labels(raw: np.ndarray, n: int, key: str, where: str, names: list[str] | None) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1 or len(raw) != n:
        raise DataError(f"{where}: '{key}' has shape {raw.shape}; expected {n} labels (N or N×1) to match the images.")
    if raw.dtype.kind in "US":
        mapping = map_class_names(sorted(set(raw.tolist())), where=f"{where} '{key}'", allow_missing=True)
        return np.array([mapping[v] for v in raw.tolist()], dtype=np.int64)
    if raw.dtype.kind not in "iu":
        raise DataError(f"{where}: '{key}' has dtype {raw.dtype}; expected integer class indices or class-name strings.")
    k = len(names) if names is not None else len(CLASS_NAMES)
    bad = np.flatnonzero((raw < 0) | (raw >= k))
    if len(bad):
        raise DataError(
            f"{where}: '{key}' has label(s) out of range [0, {k - 1}] (e.g. {raw[bad[0]]} at index {bad[0]}); "
            f"labels must index the classes {names or list(CLASS_NAMES)}."
        )
    if names is None:
        return raw.astype(np.int64)
    mapping = map_class_names(names, where=f"{where} 'class_names'", allow_missing=True)
    lut = np.array([mapping[nm] for nm in names], dtype=np.int64)
    return lut[raw.astype(np.int64)]


class NpzSource:
    """An .npz in AN2DL layout (`images`, `labels`) or MedMNIST layout (`train_images`, ... `test_labels`).

    Integer labels follow the canonical (BloodMNIST) order unless the file has a `class_names` array;
    string labels are mapped by name. MedMNIST files keep their own train/val/test split.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(os.path.expanduser(str(path))).resolve()

    def __repr__(self) -> str:
        return f"NpzSource({self.path})"

    def describe(self) -> dict:
        return {"type": "npz", "path": str(self.path)}

    def fingerprint(self) -> str:
        if not self.path.is_file():
            raise DataError(f"data.path={self.path} does not exist or is not a file; point it at an .npz file.")
        return hashlib.sha256(_file_fingerprint(self.path).encode()).hexdigest()

    def _open(self):
        self.fingerprint()
        if not zipfile.is_zipfile(self.path):  # else np.load guesses "pickled data" for any non-npz file
            raise DataError(
                f"data.path={self.path} is not an .npz archive (numpy.savez output); convert it, or use data=folder for image files."
            )
        try:
            return np.load(self.path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"data.path={self.path} is not a readable .npz file ({type(exc).__name__}: {exc}).") from None

    def load(self, preprocess: Preprocess | int, allow_missing_classes: bool = False) -> ImageTable:
        """Read the arrays and turn every image into model input (`preprocess`, or plain resizing to that many pixels)."""
        preprocess = as_preprocess(preprocess)
        image_size = preprocess.image_size
        where = f"npz file {self.path}"
        with self._open() as z:
            keys = set(z.files)
            names = [str(s) for s in z["class_names"].tolist()] if "class_names" in keys else None
            if {"images", "labels"} <= keys:
                parts = [(None, "images", "labels")]
            elif all(f"{s}_images" in keys and f"{s}_labels" in keys for s in SPLITS):
                parts = [(s, f"{s}_images", f"{s}_labels") for s in SPLITS]
            else:
                raise DataError(
                    f"{where} has keys {sorted(keys)}; expected AN2DL layout ('images', 'labels') or MedMNIST layout "
                    "('train_images', 'train_labels', 'val_images', 'val_labels', 'test_images', 'test_labels')."
                )
            all_images, all_labels, ids, hashes, splits = [], [], [], [], []
            for split, ik, lk in parts:
                try:
                    raw_images, raw_labels = z[ik], z[lk]
                except ValueError as exc:  # object arrays need pickle, which we refuse
                    raise DataError(f"{where}: '{ik}'/'{lk}' cannot be read without pickle ({exc}); save plain numeric arrays.") from None
                imgs = _check_images(raw_images, ik, where)
                labels = _check_labels(raw_labels, len(imgs), lk, where, names)
                out = np.empty((len(imgs), image_size, image_size, 3), dtype=np.uint8)
                for i in tqdm(range(len(imgs)), desc=f"resize {ik}", unit="img", mininterval=1.0, disable=len(imgs) < 2000):
                    hashes.append(pixel_hash(imgs[i]))
                    out[i] = preprocess(imgs[i])
                all_images.append(out)
                all_labels.append(labels)
                tag = split or "all"
                ids.extend(f"{self.path.name}:{tag}:{i}" for i in range(len(imgs)))
                if split:
                    splits.extend([split] * len(imgs))
        labels = np.concatenate(all_labels)
        present = {CLASS_NAMES[i] for i in np.unique(labels)}
        missing = [c for c in CLASS_NAMES if c not in present]
        if missing and not allow_missing_classes:
            raise DataError(
                f"{where}: no image of class(es) {missing}; training needs all 8 classes "
                "(data.allow_missing_classes=true to evaluate on a subset)."
            )
        return ImageTable(
            images=np.concatenate(all_images),
            labels=labels,
            ids=ids,
            hashes=hashes,
            splits=np.array(splits) if splits else None,
        )


MEDMNIST_SIZES = (28, 64, 128, 224)


class BloodMNISTSource(NpzSource):
    """BloodMNIST through the `medmnist` package: uses `<root>/bloodmnist[_SIZE].npz`, downloading if absent."""

    def __init__(self, size: int = 128, root: str = "~/.medmnist", download: bool = True) -> None:
        if int(size) not in MEDMNIST_SIZES:
            raise ConfigError(f"data.size={size}: BloodMNIST comes in sizes {MEDMNIST_SIZES}.")
        self.size = int(size)
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self.download = download
        fname = "bloodmnist.npz" if self.size == 28 else f"bloodmnist_{self.size}.npz"
        super().__init__(str(self.root / fname))

    def describe(self) -> dict:
        return {"type": "bloodmnist", "size": self.size, "path": str(self.path)}

    def fingerprint(self) -> str:
        if not self.path.is_file():
            self._fetch()
        return super().fingerprint()

    def _fetch(self) -> None:
        how = (
            f"Download {self.path.name} from https://zenodo.org/records/10519652 (MedMNIST v2) and put it at {self.path} "
            f"(or set data.root=DIR), or train on local files with data=npz data.path=FILE, data=folder data.root=DIR, "
            f"or the bundled data=sample."
        )
        if not self.download:
            raise DataError(f"BloodMNIST file {self.path} is missing and data.download=false. {how}")
        try:
            import medmnist
        except ImportError:
            raise DataError(f"the 'medmnist' package is not installed (pip install medmnist). {how}") from None
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("downloading BloodMNIST size %d into %s", self.size, self.root)
        try:
            medmnist.BloodMNIST(split="train", download=True, root=str(self.root), size=self.size)
        except Exception as exc:
            raise DataError(f"could not download BloodMNIST (size {self.size}): {type(exc).__name__}: {exc}. {how}") from None
        if not self.path.is_file():
            raise DataError(f"medmnist finished but {self.path} is not there. {how}")


__all__ = ["FolderSource", "NpzSource", "BloodMNISTSource", "canonical_class"]
