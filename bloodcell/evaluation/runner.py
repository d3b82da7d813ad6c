"""Evaluate checkpoint(s) on the checkpoint's own test split or on any other data source."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from bloodcell.checkpoint import check_trusted_targets, load_module
from bloodcell.data.datamodule import BloodCellDataModule
from bloodcell.errors import ConfigError
from bloodcell.evaluation.metrics import classification_metrics
from bloodcell.evaluation.report import format_summary, plot_confusion_matrix, write_json
from bloodcell.module import BloodCellModule, to_plain

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_probs(module: BloodCellModule, loader, device: torch.device, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels for every batch of `loader` (a plain inference loop)."""
    module = module.to(device).eval()
    probs, labels = [], []
    for x, y in tqdm(loader, desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        x = x.to(device, non_blocking=True)
        probs.append(module(x).float().softmax(dim=-1).cpu())
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


def evaluate_checkpoint(ckpt: str, data_cfg: Any | None, split: str, output_dir: str | Path, device: str = "auto",
                        loader_overrides: dict | None = None) -> dict:
    """Predict, score and report one checkpoint; writes metrics.json and confusion_matrix.png."""
    output_dir = Path(output_dir)
    module = load_module(ckpt)
    dm, own = datamodule_for(module, data_cfg, loader_overrides or {})
    if split == "auto":
        split = "test" if own else "all"
    probs, labels = predict_probs(module, dm.predict_loader(split), resolve_device(device))
    classes = module.classes
    metrics = classification_metrics(probs, labels, classes)
    metrics.update({"checkpoint": str(Path(ckpt).resolve()), "split": split, "source": dm.source.describe(), "image_size": dm.image_size})
    write_json(metrics, output_dir / "metrics.json")
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), classes, output_dir / "confusion_matrix.png",
                          title=f"{Path(ckpt).name} on {split} (acc {metrics['accuracy']:.3f})")
    log.info("evaluation of %s on %s split:\n%s", ckpt, split, format_summary(metrics, classes))
    log.info("wrote %s and %s", output_dir / "metrics.json", output_dir / "confusion_matrix.png")
    return metrics


def run(cfg: DictConfig) -> dict:
    """Entry for evaluate.py."""
    if cfg.get("predict_dir"):
        from bloodcell.predict import run_predict
        return run_predict(cfg)
    if cfg.get("ckpt") in (None, "", "???"):
        raise ConfigError("ckpt is required: python evaluate.py ckpt=PATH/TO/checkpoints/best.ckpt")
    data_cfg = cfg.get("data")
    overrides = {k: cfg[k] for k in ("num_workers", "batch_size") if cfg.get(k) is not None}
    if "batch_size" in overrides:
        overrides["eval_batch_size"] = overrides.pop("batch_size")
    return evaluate_checkpoint(str(cfg.ckpt), data_cfg if data_cfg else None, cfg.get("split", "auto"), cfg.output_dir, cfg.get("device", "auto"), overrides)
