"""Loading checkpoints safely (weights_only=True, only bloodcell factories) with clear errors."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from bloodcell.config import check_trusted_targets
from bloodcell.errors import BloodcellError, CheckpointError
from bloodcell.module import BloodCellModule

# Model-config keys that fetch initial weights; irrelevant (and possibly offline-breaking) when the
# checkpoint's state_dict supplies every weight.
WEIGHT_SOURCE_KEYS = {"pretrained": False, "weights": None, "weights_source": None}


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
    return module_from_checkpoint(read_checkpoint(path), path, map_location)


def module_from_checkpoint(ckpt: dict, path: str | Path, map_location: str | torch.device = "cpu") -> BloodCellModule:
    """`load_module` for a checkpoint dict already read (`path` names it in errors and in `module.checkpoint_path`)."""
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


def config_differences(saved: Any, current: Any, prefix: str) -> list[str]:
    """'key: saved vs current' for every leaf that differs between two nested configs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            out += config_differences(saved.get(k), current.get(k), f"{prefix}.{k}")
        return out
    return [] if saved == current else [f"{prefix}: checkpoint {str(saved)[:120]} vs config {str(current)[:120]}"]


def setup_differences(saved: Any, current: Any) -> list[str]:
    """What differs between two modules' hyper-parameters in classes, image size and model config (weight sources
    aside: they only say where the initial weights came from)."""
    drop = set(WEIGHT_SOURCE_KEYS)
    diffs = config_differences(saved.get("classes"), current.get("classes"), "classes")
    diffs += config_differences(saved.get("image_size"), current.get("image_size"), "data.image_size")
    diffs += config_differences({k: v for k, v in (saved.get("model") or {}).items() if k not in drop},
                                {k: v for k, v in (current.get("model") or {}).items() if k not in drop}, "model")
    return diffs


def check_resume_compatible(path: str | Path, module: BloodCellModule) -> None:
    """Resuming continues the same model on the same classes and image size; otherwise name what differs.

    Also vets the file itself (weights_only=True, bloodcell metadata) before Lightning touches it.
    """
    diffs = setup_differences(read_checkpoint(path)["hyper_parameters"], module.hparams)
    if diffs:
        raise CheckpointError(
            f"ckpt_path={path} was trained with a different setup ({'; '.join(diffs)}); resume with the run's own "
            "config, or start a new run in another hydra.run.dir."
        )


def weight_space_ensemble(paths: list[str | Path], weights: list[float] | None = None) -> dict:
    """One checkpoint whose weights are the convex combination of `paths`' weights (WiSE-FT, model soups).

    The members must be the same model on the same classes, image size and preprocessing (checked; usually
    epochs or phases of one run). The result is the last member's checkpoint with the combined `state_dict`,
    without optimizer or resume state, and the recipe under `checkpoint["bloodcell"]["weight_ensemble"]`.
    """
    from bloodcell.models.weight_space import convex_weights, differing_batchnorm, interpolate_state_dicts

    weights = convex_weights(weights, len(paths))
    ckpts = [read_checkpoint(p) for p in paths]
    last = ckpts[-1]
    for path, ckpt in zip(paths[:-1], ckpts[:-1]):
        diffs = setup_differences(ckpt["hyper_parameters"], last["hyper_parameters"])
        diffs += config_differences(ckpt["bloodcell"].get("preprocess"), last["bloodcell"].get("preprocess"), "preprocess")
        if diffs:
            raise CheckpointError(
                f"ckpt={path} cannot be averaged with ckpt={paths[-1]}: {'; '.join(diffs[:5])}. "
                "Average checkpoints of one run (its epochs or phases), not different models."
            )
    try:
        state = interpolate_state_dicts([c["state_dict"] for c in ckpts], weights)
    except BloodcellError as exc:
        raise CheckpointError(f"ckpt={[str(p) for p in paths]}: {exc}") from None
    keep = ("hyper_parameters", "bloodcell", "epoch", "global_step", "pytorch-lightning_version")
    out = {k: v for k, v in last.items() if k in keep}
    out["state_dict"] = state
    out["bloodcell"] = {
        **last["bloodcell"],
        "weight_ensemble": {"members": [str(Path(p).resolve()) for p in paths], "weights": weights,
                            "batchnorm_differs": differing_batchnorm([c["state_dict"] for c in ckpts])},
    }
    return out
