"""Build an Albumentations pipeline from a config op list.

`conf/augment/*.yaml` lists ops as `_target_` entries (any Albumentations transform or one of
bloodcell's own), so every op and magnitude is config, not code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import albumentations as A
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from bloodcell.errors import ConfigError


def build_transform(ops: Sequence | None, seed: int | None = None) -> A.Compose | None:
    """Compose the listed ops (None or [] → no augmentation). `seed` makes the pipeline reproducible."""
    if ops is None:
        return None
    if isinstance(ops, (DictConfig, ListConfig)):
        ops = OmegaConf.to_container(ops, resolve=True)
    if isinstance(ops, Mapping):
        raise ConfigError("augment.train must be a list of ops (each with a _target_), not a mapping.")
    if len(ops) == 0:
        return None
    built = []
    for i, op in enumerate(ops):
        if not isinstance(op, Mapping) or "_target_" not in op:
            raise ConfigError(f"augment.train[{i}] = {op!r}: each op needs a _target_ (e.g. albumentations.HorizontalFlip).")
        try:
            built.append(instantiate(op, _convert_="all"))
        except Exception as exc:
            raise ConfigError(f"augment.train[{i}] ({op['_target_']}) could not be built: {exc}") from None
    return A.Compose(built, seed=seed)


class JsdViews:
    """(clean, augmented, augmented) views of one image stacked along channels: HWC uint8 with 3·C channels.

    For AugMix's Jensen-Shannon consistency loss. Stacking keeps the Dataset/DataLoader unchanged
    (one uint8 tensor per sample); the module splits the 9 channels back into 3 batches.
    """

    def __init__(self, augmented: A.Compose, clean: A.Compose | None = None) -> None:
        self.augmented, self.clean = augmented, clean

    def __call__(self, image, **_: object) -> dict:
        clean = self.clean(image=image)["image"] if self.clean is not None else image
        views = [clean, self.augmented(image=image)["image"], self.augmented(image=image)["image"]]
        return {"image": np.concatenate(views, axis=2)}

    def set_random_seed(self, seed: int | None) -> None:
        self.augmented.set_random_seed(seed)
        if self.clean is not None:
            self.clean.set_random_seed(None if seed is None else seed + 1)

    def __repr__(self) -> str:
        return f"JsdViews(augmented={self.augmented!r}, clean={self.clean!r})"


def jsd_settings(augment: Mapping | None) -> dict | None:
    """The augment config's `jsd` node when enabled (alpha etc.), else None."""
    jsd = (augment or {}).get("jsd") or {}
    if isinstance(jsd, (DictConfig, ListConfig)):
        jsd = OmegaConf.to_container(jsd, resolve=True)
    return dict(jsd) if jsd.get("enabled") else None


def build_train_transform(augment: Mapping | None, seed: int | None = None):
    """The training transform of an augment config: its `train` ops, wrapped in JsdViews when `jsd.enabled`."""
    augment = augment or {}
    transform = build_transform(augment.get("train"), seed=seed)
    jsd = jsd_settings(augment)
    if jsd is None:
        return transform
    if transform is None:
        raise ConfigError("augment.jsd.enabled=true needs augment.train ops (the augmented views); use augment=augmix or pipeline.")
    clean = build_transform(jsd.get("clean"), seed=None if seed is None else seed + 1)
    return JsdViews(transform, clean)
