"""Randomness as a pure function of (seed, epoch): identical reruns and exact resume after any epoch.

Lightning restores weights, optimizer, scheduler and loop counters on resume, but not the Python /
NumPy / torch random states nor the augmentation pipeline's, and persistent DataLoader workers keep
their own generators. So instead of carrying RNG state across epochs, every epoch starts from
generators derived from (seed, epoch): the shuffle order, each sample's augmentation and the
global RNGs (dropout, timm Mixup) then do not depend on what ran before, on how many workers load
the data, or on whether the run was interrupted.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler

EPOCH_STREAM = 1  # streams ≥ 1 (one per batch) are the global RNGs; 0 is the sampler's


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The NumPy generator of one (seed, epoch, stream): the only source of randomness of an epoch."""
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


class SeededEpochSampler(Sampler):
    """Shuffles `n` indices with a permutation fixed by (seed, epoch) and gives each position its own
    augmentation seed; yields `(sample_seed, index)` for CachedImageDataset. Lightning calls
    `set_epoch` at every epoch start, including the first epoch after a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = epoch_generator(self.seed, self.epoch)
        order = rng.permutation(self.n)
        sample_seeds = rng.integers(0, 2**31 - 1, self.n)
        return iter(zip(sample_seeds.tolist(), order.tolist()))


def seed_global_rngs(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (dropout, timm Mixup) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSeed(L.Callback):
    """Re-seed Python/NumPy/torch before every training batch from (seed, epoch, batch); no-op when seed is None.

    Per batch rather than per epoch because Lightning skips `on_train_epoch_start` for the first epoch
    after resuming from an end-of-epoch checkpoint, and the DataLoader iterator draws from the global
    torch RNG when it is created; re-seeding after the batch is fetched sidesteps both.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After a resume, Lightning reuses the loader iterator it opened before its epoch counter was
        restored, so the sampler (and DataLoader workers, which prefetch at once) served epoch 0's order.
        Point the sampler at the real epoch and reopen the iterator, as Lightning does at every epoch start."""
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if isinstance(sampler, SeededEpochSampler) and sampler.epoch != trainer.current_epoch:
            sampler.set_epoch(trainer.current_epoch)
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.seed is None:
            return
        seed_global_rngs(int(epoch_generator(self.seed, trainer.current_epoch, EPOCH_STREAM + batch_idx).integers(0, 2**31 - 1)))
