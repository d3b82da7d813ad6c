"""Config helpers every layer may use: resolvers, plain containers, list values, trusted `_target_`s, composing.

Layer 1 (imports only `errors`): a rule about configs is written here once and used everywhere.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bloodcell.errors import CheckpointError, ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

# `_target_`s a config read from a file (a checkpoint's hyper-parameters) may name: only bloodcell's own
# factories, never arbitrary callables (checkpoints can come from anywhere).
TRUSTED_TARGET_PREFIXES = ("bloodcell.",)
# on-device batch ops (`batch_augment.ops`, also stored in checkpoints): bloodcell's vectorised and domain ops or torchvision v2 ops
TRUSTED_BATCH_OP_PREFIXES = ("bloodcell.augment.gpu.", "bloodcell.augment.domain.", "torchvision.transforms.v2.")


def register_resolvers() -> None:
    """Register `${bloodcell_root:}` so conf/ can name files in the checkout from any working directory."""
    if not OmegaConf.has_resolver("bloodcell_root"):
        OmegaConf.register_new_resolver("bloodcell_root", lambda: str(PROJECT_ROOT))


def to_plain(cfg: Any) -> Any:
    """OmegaConf → plain dicts/lists (checkpoints must hold only primitives to load with weights_only=True)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def as_list(value: Any) -> list | None:
    """A config value given as one item or a list (`ckpt=a` or `ckpt=[a,b]`) → list; None stays None."""
    if value is None:
        return None
    value = to_plain(value)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def is_trusted_target(target: Any, prefixes: Sequence[str] = TRUSTED_TARGET_PREFIXES) -> bool:
    """Whether a `_target_` names something bloodcell allows a config file to instantiate."""
    return str(target).startswith(tuple(prefixes))


def check_trusted_targets(cfg: Any, where: str, prefixes: Sequence[str] = TRUSTED_TARGET_PREFIXES) -> None:
    """Refuse any `_target_` (at any depth) outside `prefixes` in a config read from a file: no arbitrary code."""
    if isinstance(cfg, Mapping):
        target = cfg.get("_target_")
        if target is not None and not is_trusted_target(target, prefixes):
            raise CheckpointError(f"{where}: _target_={target!r} is not a bloodcell class; refusing to instantiate it.")
        for v in cfg.values():
            check_trusted_targets(v, where, prefixes)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            check_trusted_targets(v, where, prefixes)


def require_keys(cfg: Mapping | None, keys: Sequence[str], where: str) -> dict:
    """The named keys of a config block (defaults live in conf/, not in code); a missing key is a ConfigError."""
    cfg = to_plain(cfg) or {}
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(missing)}; compose it from conf/ (the YAML holds every default).")
    return {k: cfg[k] for k in keys}


def compose(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose a conf/ config in code (tools, benchmarks, tests), as the command line would with these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


@functools.cache
def _load_yaml(relpath: str) -> DictConfig:
    """One conf/ file as written (cached: callers copy what they read)."""
    return OmegaConf.load(CONF_DIR / relpath)


def yaml_defaults(relpath: str, keys: Sequence[str] | None = None) -> dict:
    """The plain keys of one conf/ file (its `defaults:` list dropped, `${paths.*}` resolved): code reads defaults here.

    For callers without a composed config (a checkpoint written before a key existed, a benchmark .npz set):
    the YAML stays the one place a default is written.
    """
    root = OmegaConf.create({"paths": _load_yaml("paths/default.yaml"), "node": _load_yaml(relpath)})
    register_resolvers()
    keys = [str(k) for k in root.node if k != "defaults"] if keys is None else list(keys)
    return {k: to_plain(root.node[k]) for k in keys}
