"""LightningDataModule: source → cache → Datasets → DataLoaders, with class balancing."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from bloodcell.config import to_plain, yaml_defaults
from bloodcell.data.cache import CacheSpec, SplitArrays, build_cache, load_cache
from bloodcell.data.classes import CLASS_NAMES
from bloodcell.data.dataset import CachedImageDataset, seed_worker_transform
from bloodcell.data.preprocess import Preprocess
from bloodcell.data.table import SPLITS
from bloodcell.errors import ConfigError, DataError
from bloodcell.reproducibility import SeededEpochSampler

log = logging.getLogger(__name__)

BALANCE_MODES = ("none", "oversample", "class_weights")


def oversample_indices(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices where every class appears as often as the largest one (whole repeats + a seeded remainder).

    Each repeat passes through the random augmentation again, so the minority classes are balanced
    by augmented copies rather than by loss weights (the reference study's recipe).
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    target = counts.max()
    out = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(labels == c)
        reps, rem = divmod(target, len(idx))
        out.append(np.concatenate([np.tile(idx, reps), rng.choice(idx, rem, replace=False)]))
    return rng.permutation(np.concatenate(out))


def class_weights_from_counts(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights N / (K · n_c) over the K classes present (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    return w


def data_defaults() -> dict:
    """The data.* settings of conf/data/_common.yaml (`_target_` included): the one place their defaults live."""
    return yaml_defaults("data/_common.yaml")


def with_data_defaults(cfg: Mapping | None) -> dict:
    """A (possibly older) data config with the keys it lacks from conf/data/_common.yaml, `preprocess.*` key by key
    (a checkpoint written before a preprocessing option existed keeps loading, with that option off)."""
    defaults, plain = data_defaults(), to_plain(cfg) or {}
    return {**defaults, **plain, "preprocess": {**defaults["preprocess"], **(plain.get("preprocess") or {})}}


def datamodule_from_cfg(cfg: Mapping) -> BloodCellDataModule:
    """A datamodule from a (possibly partial or older) data config: keys it lacks come from conf/data/_common.yaml.

    For evaluation: a checkpoint written before a key existed, a benchmark .npz set, a hand-written dict.
    Transforms stored in a config are dropped (evaluation only resizes).
    """
    from hydra.utils import instantiate

    merged = with_data_defaults(cfg)
    merged.pop("train_transform", None)
    merged.pop("eval_transform", None)
    return instantiate(merged, _convert_="all")


class BloodCellDataModule(L.LightningDataModule):
    """Serves the cached splits of one source. `train_transform` augments; eval data is only resized."""

    def __init__(
        self,
        source,
        *,
        image_size: int,
        resize_mode: str,
        preprocess: Mapping,
        val_fraction: float,
        test_fraction: float,
        split_seed: int,
        dedup: bool,
        balance: str,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        eval_num_workers: int | None,
        pin_memory: bool,
        persistent_workers: bool,
        cache_dir: str,
        allow_missing_classes: bool,
        copies: int,
        copies_mixed: bool,
        train_transform: Callable | None = None,
        eval_transform: Callable | None = None,
        seed: int = 0,
        **source_keys: object,
    ) -> None:
        # Every setting is required: its default lives in conf/data/_common.yaml (datamodule_from_cfg fills it in
        # for configs that lack it). source_keys: user-facing copies of source options (data.root, data.path,
        # data.size, ...) that the config interpolates into `source`; nothing more to do with them here.
        super().__init__()
        if not isinstance(image_size, int) or image_size < 8:
            raise ConfigError(f"data.image_size={image_size!r}: must be an integer ≥ 8 (pixels per side, e.g. 96).")
        if balance not in BALANCE_MODES:
            raise ConfigError(f"data.balance={balance!r}: use one of {BALANCE_MODES}.")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size}: must be ≥ 1.")
        self.source = source
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.preprocess = Preprocess.from_data_cfg(image_size, resize_mode, preprocess)  # validates resize_mode too
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.dedup = dedup
        self.balance = balance
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        # val/test/predict batches are plain slices of the memory map (no augmentation): worker processes
        # would only add memory (~0.5 GB each, alive beside the training workers), not speed.
        self.eval_num_workers = num_workers if eval_num_workers is None else eval_num_workers
        self.cache_dir = cache_dir
        self.allow_missing_classes = allow_missing_classes
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.seed = seed
        self.copies = int(copies or 0)
        self.copies_mixed = bool(copies_mixed)
        self.classes: list[str] = list(CLASS_NAMES)
        self.cache_folder: Path | None = None
        self.meta: dict = {}
        self.splits: dict[str, SplitArrays] = {}

    # -- building -------------------------------------------------------------------------
    @property
    def cache_spec(self) -> CacheSpec:
        """The preprocessing settings the decoded cache is keyed by."""
        return CacheSpec(self.preprocess, self.dedup, self.val_fraction, self.test_fraction, self.split_seed)

    def prepare_data(self) -> None:
        """Build (or find) the decoded cache of this source at these settings."""
        self.cache_folder = build_cache(self.source, self.cache_dir, self.cache_spec, self.allow_missing_classes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.cache_folder is None:
            self.prepare_data()
        self.meta, self.splits = load_cache(self.cache_folder)
        log.info("class counts per split:\n%s", self.counts_table())

    # -- information ----------------------------------------------------------------------
    def class_counts(self, split: str) -> np.ndarray:
        return np.bincount(self.splits[split].labels, minlength=len(self.classes))

    def counts_table(self) -> str:
        width = max(len(c) for c in self.classes)
        head = f"{'class':<{width}} " + " ".join(f"{s:>6}" for s in SPLITS)
        rows = [head]
        for i, c in enumerate(self.classes):
            rows.append(f"{c:<{width}} " + " ".join(f"{self.class_counts(s)[i]:>6}" for s in SPLITS))
        rows.append(f"{'total':<{width}} " + " ".join(f"{len(self.splits[s]):>6}" for s in SPLITS))
        return "\n".join(rows)

    @property
    def class_weights(self) -> torch.Tensor | None:
        """Loss weights when data.balance=class_weights, else None."""
        if self.balance != "class_weights":
            return None
        return torch.tensor(class_weights_from_counts(self.class_counts("train")), dtype=torch.float32)

    # -- datasets -------------------------------------------------------------------------
    def dataset(self, split: str, transform: Callable | None = None) -> CachedImageDataset:
        """Dataset for "train"/"val"/"test" or "all" (every split, e.g. an external evaluation set)."""
        if split == "all":
            parts = [self.splits[s] for s in SPLITS if len(self.splits[s])]
            images = np.concatenate([p.images() for p in parts])
            labels = np.concatenate([p.labels for p in parts])
            return CachedImageDataset(images, labels, transform)
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; use one of {SPLITS + ('all',)}")
        arr = self.splits[split]
        if len(arr) == 0:
            raise DataError(f"the {split!r} split of {self.source} is empty (data.{split}_fraction=0?).")
        indices = None
        if split == "train" and self.balance == "oversample":
            indices = oversample_indices(arr.labels, self.seed)
        return CachedImageDataset(arr.images_path, arr.labels, transform, indices)

    def ids(self, split: str) -> list[str]:
        if split == "all":
            return [i for s in SPLITS for i in self.splits[s].ids]
        return list(self.splits[split].ids)

    def _loader(self, dataset: CachedImageDataset, shuffle: bool, batch_size: int, drop_last: bool = False, sampler=None,
                train: bool = False) -> DataLoader:
        workers = self.num_workers if train else self.eval_num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            drop_last=drop_last,
            worker_init_fn=seed_worker_transform,
        )

    def offline_copies_dataset(self) -> CachedImageDataset:
        """data.copies=N: originals + N cached augmented copies, read without further augmentation."""
        from bloodcell.data.copies import build_copies

        arr = self.splits["train"]
        images, labels = build_copies(arr.images_path, arr.labels, self.train_transform, self.copies, self.copies_mixed, self.seed,
                                      self.cache_folder)
        indices = oversample_indices(labels, self.seed) if self.balance == "oversample" else None
        return CachedImageDataset(images, labels, None, indices)

    def train_dataloader(self) -> DataLoader:
        ds = self.offline_copies_dataset() if self.copies else self.dataset("train", self.train_transform)
        # order + augmentation fixed by (seed, epoch): same results with any num_workers and after a resume
        sampler = SeededEpochSampler(len(ds), self.seed)
        return self._loader(ds, shuffle=False, batch_size=self.batch_size, drop_last=len(ds) > self.batch_size, sampler=sampler, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val", self.eval_transform), shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test", self.eval_transform), shuffle=False, batch_size=self.eval_batch_size)

    def predict_loader(self, split: str, transform: Callable | None = None) -> DataLoader:
        return self._loader(self.dataset(split, transform or self.eval_transform), shuffle=False, batch_size=self.eval_batch_size)
