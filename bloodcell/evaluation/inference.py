"""Checkpoints → ensemble members → probabilities: what evaluation, benchmarks and folder prediction share.

A member is rebuilt from its checkpoint alone; each member sees the data at its own image size and
normalisation through the ordinary data path (`datamodule_for`), and the members' probabilities are averaged.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bloodcell.checkpoint import load_module
from bloodcell.config import as_list, check_trusted_targets, to_plain
from bloodcell.data.datamodule import BloodCellDataModule, datamodule_from_cfg
from bloodcell.data.preprocess import Preprocess
from bloodcell.errors import CheckpointError, ConfigError, DataError
from bloodcell.evaluation.metrics import average_probs
from bloodcell.module import BloodCellModule

log = logging.getLogger(__name__)

TTA_MODES = ("none", "flips", "d4", "scales")
TTA_ZOOMS = (0.8, 1.0, 1.25)  # tta=scales: symmetric in log-magnification around the model's own scale


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The NCHW batch seen at `factor`× magnification, same size: centre crop + upsample (>1) or reflect-pad + downsample (<1)."""
    if factor == 1.0:
        return x
    h, w = x.shape[-2:]
    xf = x.float()
    if factor > 1:
        ch, cw = max(1, round(h / factor)), max(1, round(w / factor))
        top, left = (h - ch) // 2, (w - cw) // 2
        xf = xf[..., top : top + ch, left : left + cw]
    else:
        ph, pw = round(h / factor) - h, round(w / factor) - w
        xf = torch.nn.functional.pad(xf, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect")
    out = torch.nn.functional.interpolate(xf, size=(h, w), mode="bilinear", align_corners=False, antialias=factor < 1)
    return out.round_().clamp_(0, 255).to(x.dtype) if x.dtype == torch.uint8 else out.to(x.dtype)


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` → the GPU when there is one, else the CPU; anything else as torch names it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def require_checkpoints(ckpt: Any) -> list[str]:
    """`ckpt=a.ckpt` or `ckpt=[a.ckpt,b.ckpt]` → list of paths; a missing ckpt stops with the command to type."""
    items = as_list(ckpt) or []
    if not items or any(c in (None, "", "???") for c in items):
        raise ConfigError(
            "ckpt is required: python evaluate.py ckpt=PATH/TO/checkpoints/best.ckpt (or ckpt=[a.ckpt,b.ckpt] for an ensemble)."
        )
    return [str(c) for c in items]


def tta_views(mode: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Views of an NCHW batch whose predictions are averaged: identity; + h/v flips; all 8 of the dihedral group D4;
    or three magnifications (TTA_ZOOMS)."""
    if mode == "none":
        return [lambda x: x]
    if mode == "flips":
        return [lambda x: x, lambda x: torch.flip(x, dims=(3,)), lambda x: torch.flip(x, dims=(2,))]
    if mode == "d4":
        rots = [lambda x, k=k: torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
        return rots + [lambda x, r=r: r(torch.flip(x, dims=(3,))) for r in rots]
    if mode == "scales":  # other labs image at other magnifications: average over a zoomed-out, the plain and a zoomed-in view
        return [lambda x, z=z: zoom(x, z) for z in TTA_ZOOMS]
    raise ConfigError(f"tta={mode!r}: use one of {TTA_MODES}.")


@dataclass(frozen=True)
class InferenceSettings:
    """How members predict a set; these travel together from the evaluate config to every prediction pass."""

    device: torch.device
    tta: str = "none"  # "none" means no test-time augmentation (the identity), not a tunable default
    loader_overrides: dict = field(default_factory=dict)  # data.* keys for the evaluation loaders
    progress: bool = True


@torch.inference_mode()
def predict_probs(
    module: BloodCellModule, loader, device: torch.device, progress: bool = True, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (averaged over the TTA views) and labels for every batch of `loader`."""
    views = tta_views(tta)
    module = module.to(device).eval()
    probs, labels = [], []
    for x, y in tqdm(loader, desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        x = x.to(device, non_blocking=True)
        p = module(views[0](x)).float().softmax(dim=-1)
        for view in views[1:]:
            p += module(view(x)).float().softmax(dim=-1)
        if len(views) > 1:
            p /= len(views)
        probs.append(p.cpu())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def datamodule_for(module: BloodCellModule, data_cfg: Any | None, overrides: dict) -> tuple[BloodCellDataModule, bool]:
    """The data a checkpoint is evaluated on, preprocessed as the checkpoint was trained.

    With no data config: the checkpoint's own source and split. Otherwise the given source, at the
    checkpoint's image size, classes may be a subset. Returns (datamodule, is_own_data).
    """
    own = data_cfg is None
    cfg = to_plain(module.hparams.data) if own else to_plain(data_cfg)
    if not cfg or "_target_" not in cfg:
        raise ConfigError("no data to evaluate on: the checkpoint holds no data config; pass data=folder data.root=DIR (or data=npz ...).")
    if own:
        check_trusted_targets(cfg, f"checkpoint {getattr(module, 'checkpoint_path', '')} data config")
    prep = module.preprocessing  # the checkpoint's own preprocessing, whatever the data source says
    cfg = {**cfg, **overrides, "image_size": prep.image_size, "resize_mode": prep.resize_mode,
           "preprocess": {k: v for k, v in prep.describe().items() if k not in ("image_size", "resize_mode")}}
    if not own:
        cfg["allow_missing_classes"] = True
    dm = datamodule_from_cfg(cfg)
    dm.prepare_data()
    dm.setup("test")
    return dm, own


@dataclass
class Member:
    """One ensemble member: its checkpoint, rebuilt module and (unnormalised) weight."""

    path: str
    module: BloodCellModule
    weight: float = 1.0

    def describe(self) -> dict:
        """What metrics.json records about this member."""
        model = self.module.hparams.model
        out = {
            "checkpoint": self.path,
            "backbone": str(model.get("backbone", model.get("_target_", "?"))),
            "image_size": int(self.module.hparams.image_size),
            "weight": self.weight,
        }
        meta = getattr(self.module, "checkpoint_meta", None) or {}
        if meta.get("weight_ensemble"):  # a weight-space mean of other checkpoints (bloodcell.tools.weight_ensemble): say which
            out["weight_ensemble"] = meta["weight_ensemble"]
        if meta.get("init_from"):  # a second-stage run (train.py init_from=): the checkpoint it started from
            out["init_from"] = meta["init_from"]
        return out


@dataclass
class Predictions:
    """Probabilities of the (weighted) ensemble for one set, aligned with labels and ids."""

    probs: np.ndarray
    labels: np.ndarray
    ids: list[str]
    split: str
    source: dict = field(default_factory=dict)


def check_same_classes(modules: Sequence[BloodCellModule], paths: Sequence[str]) -> list[str]:
    """Ensemble members must predict the same classes in the same order (else averaging is meaningless)."""
    classes = list(modules[0].classes)
    for module, path in zip(modules[1:], paths[1:]):
        if list(module.classes) != classes:
            raise CheckpointError(
                f"ckpt={path} predicts classes {list(module.classes)}, but ckpt={paths[0]} predicts {classes}; "
                "an ensemble needs checkpoints trained on the same class set."
            )
    return classes


def load_members(ckpts: Any, weights: Sequence[float] | None = None) -> list[Member]:
    """Load every checkpoint (one path or a list); all must predict the same classes in the same order."""
    ckpts = require_checkpoints(ckpts)
    if weights is not None and (len(weights) != len(ckpts) or any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ConfigError(f"weights={list(weights)}: give {len(ckpts)} non-negative numbers (one per ckpt) with a positive sum.")
    members = [Member(str(Path(c).expanduser()), load_module(c), float(weights[i]) if weights else 1.0) for i, c in enumerate(ckpts)]
    check_same_classes([m.module for m in members], [m.path for m in members])
    return members


def resolve_split(split: str, own: bool) -> str:
    """`auto` → the test split of the checkpoint's own data, or every image of another source."""
    return ("test" if own else "all") if split == "auto" else split


def ensemble_predict(members: list[Member], data_cfg: Any | None, split: str, how: InferenceSettings) -> Predictions:
    """Each member predicts the set at its own image size and normalisation; probabilities are averaged.

    The members' samples must line up: same ids in the same order (e.g. members trained on the same
    source and split), otherwise averaging would mix different images.
    """
    outs = []
    for m in members:
        dm, own = datamodule_for(m.module, data_cfg, how.loader_overrides)
        sp = resolve_split(split, own)
        probs, labels = predict_probs(m.module, dm.predict_loader(sp), how.device, how.progress, how.tta)
        outs.append(Predictions(probs, labels, dm.ids(sp), sp, dm.source.describe()))
    ref = outs[0]
    for m, o in zip(members[1:], outs[1:]):
        if o.ids != ref.ids or not np.array_equal(o.labels, ref.labels):
            raise DataError(
                f"ensemble members see different images on the {ref.split} split: "
                f"{members[0].path} ({len(ref.ids)} images from {ref.source}) vs {m.path} ({len(o.ids)} images from {o.source}); "
                "train members on the same data and split, or pass one data= source."
            )
    probs = average_probs([o.probs for o in outs], [m.weight for m in members]) if len(outs) > 1 else outs[0].probs
    return Predictions(np.asarray(probs, dtype=np.float64), ref.labels, ref.ids, ref.split, ref.source)


SPLIT_KEYS = ("split_seed", "val_fraction", "test_fraction")  # a source split the same way gives the same val/test


def own_split_or_none(
    members: list[Member], split: str, how: InferenceSettings, data_cfg: Any | None = None
) -> Predictions | None:
    """The members' own val/test split, or None when a checkpoint holds no data config.

    A checkpoint trained on another machine (a GPU node) names a data folder that is not here; then the same split
    of `data_cfg` (the `data=` given to evaluate.py, e.g. the same source at its local path) is used instead.
    """
    own = [to_plain(m.module.hparams.data) for m in members]
    if not all(own):
        return None
    roots = [cfg.get("root") or (cfg.get("source") or {}).get("root") for cfg in own]
    moved = [r for r in roots if r and not Path(str(r)).expanduser().exists()]
    quiet = InferenceSettings(how.device, how.tta, how.loader_overrides, progress=False)
    given = to_plain(data_cfg) if data_cfg is not None else None
    same_split = given and all(all(cfg.get(k) == given.get(k) for k in SPLIT_KEYS) for cfg in own)
    if moved and same_split:
        log.warning("the checkpoint's data folder %s is not here: its %s split is taken from the given data (%s), "
                    "split the same way (%s)", moved[0], split, given.get("root"), ", ".join(SPLIT_KEYS))
        return ensemble_predict(members, data_cfg, split, quiet)
    return ensemble_predict(members, None, split, quiet)


def common_preprocess(members: Sequence[Member]) -> Preprocess:
    """The one Preprocess all members share (one input per image); members that differ are a clear error."""
    first = members[0].module.preprocessing
    for m in members[1:]:
        other = m.module.preprocessing
        if other != first:
            a, b = first.describe(), other.describe()
            diff = {k: (v, b[k]) for k, v in a.items() if b[k] != v}
            raise CheckpointError(
                f"ckpt={m.path} preprocesses images differently from ckpt={members[0].path} ({diff}); exported graphs and "
                "heat-maps take one input per image, so members must share data.image_size, resize_mode and data.preprocess."
            )
    return first
