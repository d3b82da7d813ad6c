"""Torch Dataset over a memory-mapped split; yields uint8 CHW tensors (normalised later, on device)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


class CachedImageDataset(Dataset):
    """Images from a cached .npy, opened lazily per worker (memory-mapped, shared page cache).

    `transform` is an Albumentations-style callable `transform(image=HWC uint8) -> {"image": ...}`
    returning uint8 HWC. `indices` lets a split be re-sampled (e.g. oversampling) without copying.
    Returning uint8 keeps host→device copies 4× smaller; the LightningModule normalises.
    """

    def __init__(
        self,
        images: str | Path | np.ndarray,
        labels: np.ndarray,
        transform: Callable | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        self._source = images
        self._images: np.ndarray | None = images if isinstance(images, np.ndarray) else None
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self._source, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if not isinstance(self._source, np.ndarray):
            state["_images"] = None  # each worker re-opens the memory map instead of pickling pixels
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """`key` is a position, or `(augmentation seed, position)` from SeededEpochSampler."""
        sample_seed, i = key if isinstance(key, tuple) else (None, key)
        if sample_seed is not None and self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(sample_seed)
        j = int(self.indices[i])
        img = np.array(self.images[j])  # own, writable copy of one image
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), int(self.labels[j])


def seed_worker_transform(worker_id: int) -> None:
    """DataLoader worker_init_fn: give each worker's Albumentations pipeline its own seed.

    A seeded Compose is copied into every worker with the same random state, which would repeat
    the same augmentations across workers. torch's per-worker seed is distinct per worker and
    reproducible under `seed_everything(..., workers=True)`.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(torch.initial_seed() % 2**32))
