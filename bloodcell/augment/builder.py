"""Build an Albumentations pipeline from a config op list.

`conf/augment/*.yaml` lists ops as `_target_` entries (any Albumentations transform or one of
bloodcell's own), so every op and magnitude is config, not code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import albumentations as A
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
