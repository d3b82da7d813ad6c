"""Loading checkpoints safely (weights_only=True, only bloodcell factories) with clear errors."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from bloodcell.errors import CheckpointError
from bloodcell.module import TRUSTED_TARGET_PREFIXES, BloodCellModule

# Model-config keys that fetch initial weights; irrelevant (and possibly offline-breaking) when the
# checkpoint's state_dict supplies every weight.
WEIGHT_SOURCE_KEYS = {"pretrained": False, "weights": None}


def check_trusted_targets(cfg: Any, where: str) -> None:
    """Refuse any `_target_` outside bloodcell in a config read from a file (no arbitrary code)."""
    if isinstance(cfg, dict):
        target = cfg.get("_target_")
        if target is not None and not str(target).startswith(TRUSTED_TARGET_PREFIXES):
            raise CheckpointError(f"{where}: _target_={target!r} is not a bloodcell class; refusing to instantiate it.")
        for v in cfg.values():
            check_trusted_targets(v, where)
    elif isinstance(cfg, list):
        for v in cfg:
            check_trusted_targets(v, where)


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True; a missing, foreign or unsafe file is a CheckpointError."""
    path = Path(path).expanduser()
    if not path.is_file():
        hint = " (a folder: give the .ckpt file inside, e.g. checkpoints/last.ckpt)" if path.is_dir() else ""
        raise CheckpointError(f"ckpt={path}: no such checkpoint file{hint}. Checkpoints are written to <run dir>/checkpoints/.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"ckpt={path} could not be loaded safely (weights_only=True): {str(exc).splitlines()[0][:300]}. "
            "It is corrupt, truncated, or holds Python objects other than tensors; only load checkpoints written by bloodcell."
        ) from None
    if not isinstance(ckpt, dict) or "bloodcell" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"ckpt={path} is not a bloodcell checkpoint (no 'bloodcell' metadata); use a .ckpt written by train.py.")
    return ckpt


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> BloodCellModule:
    """Rebuild the trained module from a checkpoint alone (config, classes, size, normalisation, weights)."""
    ckpt = read_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    check_trusted_targets(hp.get("model", {}), f"ckpt={path} model config")
    hp["model"] = {**hp["model"], **{k: v for k, v in WEIGHT_SOURCE_KEYS.items() if k in hp["model"]}}
    module = BloodCellModule(**hp)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"ckpt={path}: weights do not match its own model config ({str(exc).splitlines()[0]}).") from None
    module.checkpoint_path = str(Path(path).resolve())
    module.checkpoint_meta = ckpt["bloodcell"]
    return module.eval().to(map_location)


def check_resume_compatible(path: str | Path, module: BloodCellModule) -> None:
    """Resuming continues the same model on the same classes and image size; otherwise name what differs.

    Also vets the file itself (weights_only=True, bloodcell metadata) before Lightning touches it.
    """
    saved = read_checkpoint(path)["hyper_parameters"]
    ignore = set(WEIGHT_SOURCE_KEYS)
    diffs = []
    for key in ("classes", "image_size", "model"):
        old, new = saved.get(key), module.hparams.get(key)
        if key == "model":
            old = {k: v for k, v in (old or {}).items() if k not in ignore}
            new = {k: v for k, v in (new or {}).items() if k not in ignore}
        if old != new:
            diffs.append(f"{key}: checkpoint {str(old)[:160]} vs config {str(new)[:160]}")
    if diffs:
        raise CheckpointError(
            f"ckpt_path={path} was trained with a different setup ({'; '.join(diffs)}); resume with the run's own "
            "config (model=..., data.image_size=...), or start a new run in another hydra.run.dir."
        )
