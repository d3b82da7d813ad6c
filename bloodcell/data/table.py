"""The in-memory table every source produces: one shape for folders, npz files and MedMNIST."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class ImageTable:
    """Decoded, resized images with canonical labels.

    images: N×S×S×3 uint8; labels: N int64 indices into CLASS_NAMES; ids: file path or
    "<npz>:<split>:<index>"; hashes: content hash of the *original* pixels (for dedup);
    splits: the source's own split per image ("train"/"val"/"test") or None when it has none;
    bad_files: (id, reason) for every file that could not be read.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    hashes: list[str]
    splits: np.ndarray | None = None
    bad_files: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.labels)
        assert len(self.images) == n == len(self.ids) == len(self.hashes), "ImageTable columns differ in length"
        assert self.splits is None or len(self.splits) == n

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, keep: np.ndarray) -> ImageTable:
        """Rows where `keep` (bool mask or index array) holds; bad_files carried over."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return ImageTable(
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx],
            hashes=[self.hashes[i] for i in idx],
            splits=None if self.splits is None else self.splits[idx],
            bad_files=list(self.bad_files),
        )
