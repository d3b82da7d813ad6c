"""Evaluate checkpoint(s) on the checkpoint's own test split or on any other data source."""
from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bloodcell.checkpoint import check_trusted_targets, load_module
from bloodcell.data.datamodule import BloodCellDataModule
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.benchmark_sets import read_manifest
from bloodcell.evaluation.metrics import (
    apply_temperature,
    average_probs,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from bloodcell.evaluation.report import (
    format_report_md,
    format_summary,
    plot_confusion_matrix,
    plot_corruption_heatmap,
    plot_reliability,
    write_json,
    write_predictions_csv,
)
from bloodcell.module import BloodCellModule, to_plain

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


TTA_MODES = ("none", "flips", "d4")


def tta_views(mode: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Views of an NCHW batch whose predictions are averaged: identity; + h/v flips; or all 8 of the dihedral group D4."""
    if mode == "none":
        return [lambda x: x]
    if mode == "flips":
        return [lambda x: x, lambda x: torch.flip(x, dims=(3,)), lambda x: torch.flip(x, dims=(2,))]
    if mode == "d4":
        rots = [lambda x, k=k: torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
        return rots + [lambda x, r=r: r(torch.flip(x, dims=(3,))) for r in rots]
    raise ConfigError(f"tta={mode!r}: use one of {TTA_MODES}.")


@torch.inference_mode()
def predict_probs(module: BloodCellModule, loader, device: torch.device, progress: bool = True, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
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
    cfg = {**cfg, **overrides, "image_size": int(module.hparams.image_size)}
    if not own:
        cfg["allow_missing_classes"] = True
    cfg.pop("train_transform", None)
    cfg.pop("eval_transform", None)
    dm = instantiate(cfg, _convert_="all")
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
        model = self.module.hparams.model
        return {"checkpoint": self.path, "backbone": str(model.get("backbone", model.get("_target_", "?"))),
                "image_size": int(self.module.hparams.image_size), "weight": self.weight}


@dataclass
class Predictions:
    """Probabilities of the (weighted) ensemble for one set, aligned with labels and ids."""

    probs: np.ndarray
    labels: np.ndarray
    ids: list[str]
    split: str
    source: dict = field(default_factory=dict)


def load_members(ckpts: list[str], weights: list[float] | None = None) -> list[Member]:
    """Load every checkpoint; all must predict the same classes in the same order."""
    if not ckpts:
        raise ConfigError("ckpt is required: python evaluate.py ckpt=PATH or ckpt=[a.ckpt,b.ckpt,c.ckpt]")
    if weights is not None and (len(weights) != len(ckpts) or any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ConfigError(f"weights={list(weights)}: give {len(ckpts)} non-negative numbers (one per ckpt) with a positive sum.")
    members = [Member(str(Path(c).expanduser()), load_module(c), float(weights[i]) if weights else 1.0) for i, c in enumerate(ckpts)]
    ref = members[0].module.classes
    for m in members[1:]:
        if m.module.classes != ref:
            raise ConfigError(f"ensemble member {m.path} predicts classes {m.module.classes}, but {members[0].path} predicts {ref}; members must share classes.")
    return members


def resolve_split(split: str, own: bool) -> str:
    return ("test" if own else "all") if split == "auto" else split


def ensemble_predict(members: list[Member], data_cfg: Any | None, split: str, overrides: dict, device: torch.device,
                     tta: str = "none", progress: bool = True) -> Predictions:
    """Each member predicts the set at its own image size and normalisation; probabilities are averaged.

    The members' samples must line up: same ids in the same order (e.g. members trained on the same
    source and split), otherwise averaging would mix different images.
    """
    outs = []
    for m in members:
        dm, own = datamodule_for(m.module, data_cfg, overrides)
        sp = resolve_split(split, own)
        probs, labels = predict_probs(m.module, dm.predict_loader(sp), device, progress, tta)
        outs.append(Predictions(probs, labels, dm.ids(sp), sp, dm.source.describe()))
    ref = outs[0]
    for m, o in zip(members[1:], outs[1:]):
        if o.ids != ref.ids or not np.array_equal(o.labels, ref.labels):
            raise DataError(
                f"ensemble members see different images on the {ref.split} split: {members[0].path} ({len(ref.ids)} images from {ref.source}) "
                f"vs {m.path} ({len(o.ids)} images from {o.source}); train members on the same data and split, or pass one data= source."
            )
    probs = average_probs([o.probs for o in outs], [m.weight for m in members]) if len(outs) > 1 else outs[0].probs
    return Predictions(np.asarray(probs, dtype=np.float64), ref.labels, ref.ids, ref.split, ref.source)


def score(probs: np.ndarray, labels: np.ndarray, classes: list[str], ece_bins: int) -> dict:
    """Classification metrics plus calibration (ECE, NLL, reliability bins)."""
    out = classification_metrics(probs, labels, classes)
    out["ece"] = expected_calibration_error(probs, labels, ece_bins)
    out["nll"] = negative_log_likelihood(probs, labels)
    out["reliability"] = reliability_bins(probs, labels, ece_bins)
    return out


def npz_data_cfg(path: str | Path, cache_dir: str | Path | None) -> dict:
    """Data config for a benchmark .npz: every image, in file order, no dedup (corruptions may collide)."""
    cfg = {"_target_": "bloodcell.data.BloodCellDataModule", "source": {"_target_": "bloodcell.data.NpzSource", "path": str(path)},
           "dedup": False, "val_fraction": 0.0, "test_fraction": 0.0, "resize_mode": "squash"}
    if cache_dir:
        cfg["cache_dir"] = str(cache_dir)
    return cfg


def own_split_or_none(members: list[Member], split: str, overrides: dict, device: torch.device, tta: str) -> Predictions | None:
    """The members' own val/test split, or None when a checkpoint holds no data config."""
    if not all(to_plain(m.module.hparams.data) for m in members):
        return None
    return ensemble_predict(members, None, split, overrides, device, tta, progress=False)


def robustness(members: list[Member], benchmark_dir: str | Path, overrides: dict, device: torch.device, tta: str,
               cache_dir: str | Path | None, val: Predictions | None, test_acc: float | None) -> dict:
    """Accuracy on the clean, Bmk and every corruption × severity set of a built benchmark folder."""
    folder, manifest = read_manifest(benchmark_dir)

    def accuracy(rel: str) -> float:
        p = ensemble_predict(members, npz_data_cfg(folder / rel, cache_dir), "all", overrides, device, tta, progress=False)
        return float((p.probs.argmax(axis=1) == p.labels).mean())

    files = manifest["files"]
    clean_acc = accuracy("clean.npz") if "clean.npz" in files else None
    bmk_acc = accuracy("bmk.npz") if "bmk.npz" in files else None
    table: dict[str, dict[str, float]] = {}
    for name in manifest["corruptions"]:
        table[name] = {str(s): accuracy(f"corruptions/{name}_s{s}.npz") for s in manifest["severities"]}
        log.info("corruption %-16s %s", name, "  ".join(f"s{s}={a:.3f}" for s, a in table[name].items()))
    cells = [a for row in table.values() for a in row.values()]
    val_acc = float((val.probs.argmax(axis=1) == val.labels).mean()) if val is not None else None
    return {
        "summary": {"val_acc": val_acc, "test_acc": test_acc, "bmk_acc": bmk_acc,
                    "mean_corruption_acc": float(np.mean(cells)) if cells else None, "clean_benchmark_acc": clean_acc},
        "per_corruption_mean": {n: float(np.mean(list(r.values()))) for n, r in table.items()},
        "corruptions": table,
        "benchmark_dir": str(folder),
        "benchmark": {k: manifest[k] for k in ("seed", "split", "source", "image_size", "n") if k in manifest},
    }


def write_corruption_csv(table: dict[str, dict[str, float]], path: Path) -> Path:
    sevs = sorted({s for row in table.values() for s in row}, key=int)
    lines = ["corruption," + ",".join(f"s{s}" for s in sevs) + ",mean"]
    for name, row in table.items():
        lines.append(f"{name}," + ",".join(f"{row[s]:.4f}" for s in sevs) + f",{np.mean([row[s] for s in sevs]):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate(ckpts: list[str], data_cfg: Any | None = None, split: str = "auto", output_dir: str | Path = "eval", device: str = "auto",
             loader_overrides: dict | None = None, weights: list[float] | None = None, tta: str = "none", calibrate: bool = False,
             ece_bins: int = 15, benchmark_dir: str | Path | None = None, cache_dir: str | Path | None = None, overwrite: bool = False) -> dict:
    """Predict with one checkpoint or an ensemble, score, calibrate, run the benchmark sets, write every report file."""
    output_dir = Path(output_dir)
    if (output_dir / "metrics.json").exists() and not overwrite:
        raise ConfigError(f"{output_dir / 'metrics.json'} already exists; choose another output_dir or pass overwrite=true.")
    tta_views(tta)  # validate before the slow part
    if benchmark_dir:
        read_manifest(benchmark_dir)
    members = load_members(ckpts, weights)
    classes = members[0].module.classes
    dev = resolve_device(device)
    overrides = loader_overrides or {}
    preds = ensemble_predict(members, data_cfg, split, overrides, dev, tta)
    val = own_split_or_none(members, "val", overrides, dev, tta) if (calibrate or benchmark_dir) else None
    probs = preds.probs
    calibration = None
    if calibrate:
        if val is None:
            raise ConfigError("calibrate=true needs the validation split, but a checkpoint holds no data config; train with train.py.")
        temperature = fit_temperature(val.probs, val.labels)
        calibration = {"temperature": temperature, "fitted_on": "val", "n_val": len(val.labels),
                       "ece_before": expected_calibration_error(probs, preds.labels, ece_bins), "nll_before": negative_log_likelihood(probs, preds.labels)}
        probs = apply_temperature(probs, temperature)
    metrics = score(probs, preds.labels, classes, ece_bins)
    sizes = sorted({int(m.module.hparams.image_size) for m in members})
    metrics.update({
        "checkpoint": members[0].path if len(members) == 1 else [m.path for m in members],
        "members": [m.describe() for m in members],
        "split": preds.split, "source": preds.source, "image_size": sizes[0] if len(sizes) == 1 else sizes, "tta": tta,
        "calibration": calibration,
    })
    robust = None
    if benchmark_dir:
        own_test = data_cfg is None and preds.split == "test"
        if own_test:
            test_acc = metrics["accuracy"]
        else:
            test = own_split_or_none(members, "test", overrides, dev, tta)
            test_acc = float((test.probs.argmax(axis=1) == test.labels).mean()) if test is not None else None
        robust = robustness(members, benchmark_dir, overrides, dev, tta, cache_dir, val, test_acc)
        write_json(robust, output_dir / "robustness.json")
        write_corruption_csv(robust["corruptions"], output_dir / "corruption_accuracy.csv")
        plot_corruption_heatmap(robust["corruptions"], output_dir / "corruption_heatmap.png",
                                title=f"accuracy under corruption (mean {robust['summary']['mean_corruption_acc']:.3f})")
        metrics["robustness"] = robust["summary"]
    name = Path(members[0].path).name if len(members) == 1 else f"ensemble of {len(members)}"
    write_json(metrics, output_dir / "metrics.json")
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), classes, output_dir / "confusion_matrix.png",
                          title=f"{name} on {preds.split} (acc {metrics['accuracy']:.3f})")
    plot_reliability(metrics["reliability"], output_dir / "reliability.png", title=f"{name}: ECE {metrics['ece']:.3f}")
    write_predictions_csv(output_dir / "predictions.csv", preds.ids, preds.labels, probs, classes)
    (output_dir / "report.md").write_text(format_report_md(metrics, classes, robust))
    log.info("evaluation of %s on %s split:\n%s", name, preds.split, format_summary(metrics, classes))
    if robust:
        s = robust["summary"]
        log.info("robustness: val acc %s | test acc %s | Bmk acc %s | mean corruption acc %s",
                 *(f"{s[k]:.4f}" if s[k] is not None else "–" for k in ("val_acc", "test_acc", "bmk_acc", "mean_corruption_acc")))
    log.info("wrote metrics.json, report.md, predictions.csv and PNGs to %s", output_dir)
    return metrics


def evaluate_checkpoint(ckpt: str, data_cfg: Any | None, split: str, output_dir: str | Path, device: str = "auto",
                        loader_overrides: dict | None = None) -> dict:
    """One checkpoint, no extras (what train.py runs after fitting). It may refresh the run's own eval/
    folder: a run resumed into its own directory re-evaluates its new best checkpoint."""
    return evaluate([ckpt], data_cfg, split, output_dir, device, loader_overrides, overwrite=True)


def as_list(value: Any) -> list | None:
    """A config value given as one item or a list (`ckpt=a` or `ckpt=[a,b]`) → list; None stays None."""
    if value is None:
        return None
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run(cfg: DictConfig) -> dict:
    """Entry for evaluate.py (the dispatch point for evaluation modes)."""
    if cfg.get("predict_dir"):
        from bloodcell.predict import run_predict

        return run_predict(cfg)
    ckpts = as_list(cfg.get("ckpt"))
    if not ckpts or ckpts[0] in (None, "", "???"):
        raise ConfigError("ckpt is required: python evaluate.py ckpt=PATH/TO/checkpoints/best.ckpt (or ckpt=[a.ckpt,b.ckpt])")
    data_cfg = cfg.get("data")
    overrides = {k: cfg[k] for k in ("num_workers", "batch_size") if cfg.get(k) is not None}
    if "batch_size" in overrides:
        overrides["eval_batch_size"] = overrides.pop("batch_size")
    if "num_workers" in overrides:
        overrides["eval_num_workers"] = overrides.pop("num_workers")
    weights = as_list(cfg.get("weights"))
    return evaluate([str(c) for c in ckpts], data_cfg if data_cfg else None, cfg.get("split", "auto"), cfg.output_dir, cfg.get("device", "auto"),
                    overrides, [float(w) for w in weights] if weights else None, cfg.get("tta", "none"), bool(cfg.get("calibrate", False)),
                    int(cfg.get("ece_bins", 15)), cfg.get("benchmark_dir"), cfg.paths.get("cache_dir"), bool(cfg.get("overwrite", False)))
