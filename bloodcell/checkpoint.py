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


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict:
    """torch.load with weights_only=True; a missing, foreign or unsafe file is a CheckpointError naming `key`=path."""
    path = Path(path).expanduser()
    if not path.is_file():
        hint = " (a folder: give the .ckpt file inside, e.g. checkpoints/last.ckpt)" if path.is_dir() else ""
        raise CheckpointError(f"{key}={path}: no such checkpoint file{hint}. Checkpoints are written to <run dir>/checkpoints/.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{key}={path} could not be loaded safely (weights_only=True): {str(exc).splitlines()[0][:300]}. "
            "It is corrupt, truncated, or holds Python objects other than tensors; only load checkpoints written by bloodcell."
        ) from None
    if not isinstance(ckpt, dict) or "bloodcell" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{key}={path} is not a bloodcell checkpoint (no 'bloodcell' metadata); use a .ckpt written by train.py.")
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


def init_from_checkpoint(path: str | Path, module: BloodCellModule, ckpt: dict | None = None) -> list[str]:
    """Start a new run from a trained checkpoint's network weights (`init_from=PATH`), not a resume.

    Why: a short second stage from a finished model — fine-tuning at a larger `data.image_size` (FixRes), or on a lab's
    own labelled images — needs the trained backbone and head, but a fresh optimiser, schedule, epoch count and data.
    The weights copied are the checkpoint's `state_dict`, i.e. the EMA average where the run kept one (what it was
    evaluated with). Classes (names and order) and network must match; returns what else differs (image size,
    preprocessing), for the log. `ckpt`: the file already read (read_checkpoint(path, key="init_from")).
    """
    ckpt = ckpt if ckpt is not None else read_checkpoint(path, key="init_from")
    saved = ckpt["hyper_parameters"]
    saved_classes = list(saved.get("classes") or [])
    if saved_classes != list(module.classes):
        raise CheckpointError(
            f"init_from={path}: trained on classes {saved_classes}, this run has {list(module.classes)}; "
            "the head's outputs would mean different classes. Start from a checkpoint with the same classes in the same order."
        )
    before, now = (str((m or {}).get("backbone", (m or {}).get("_target_"))) for m in (saved.get("model"), module.hparams.model))
    if before != now:
        raise CheckpointError(f"init_from={path}: its network is {before}, this run's model is {now}; set model=... to the checkpoint's.")
    weights = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        module.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"init_from={path}: its weights do not fit this run's model ({str(exc).splitlines()[0][:300]}); "
            "keep the checkpoint's model.head and backbone settings."
        ) from None
    diffs = config_differences(saved.get("image_size"), module.hparams.image_size, "data.image_size")
    prep_before, prep_now = ({k: v for k, v in (p or {}).items() if k != "image_size"}
                             for p in (ckpt["bloodcell"].get("preprocess"), module.preprocessing.describe()))
    return diffs + config_differences(prep_before, prep_now, "preprocess")


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
