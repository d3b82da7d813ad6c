"""Predict every image under a folder tree with one checkpoint or an ensemble → CSV (+ errors CSV).

A lab points this at folders straight from its scanners: any size, grayscale, RGBA, 16-bit TIFF,
PNG, JPEG, BMP. Each file is decoded once (`read_image`), resized per model with the checkpoint's
own size and resize mode (`resize_image`), and every file ends up in exactly one of the two CSVs:
predicted, or listed with the reason it could not be read. A bad file never stops the run.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from bloodcell.data.images import decode_file, visible_files
from bloodcell.data.preprocess import Preprocess
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.explain_report import explain_mode, write_overlays
from bloodcell.evaluation.inference import common_preprocess, load_members, require_checkpoints, resolve_device
from bloodcell.evaluation.metrics import average_probs
from bloodcell.evaluation.report import write_json
from bloodcell.module import BloodCellModule

log = logging.getLogger(__name__)

TOP_K = 3
PREDICTION_COLUMNS = ["path", "predicted_class", "probability", "second_class", "second_probability", "third_class", "third_probability"]
ERROR_COLUMNS = ["path", "error"]


@dataclass
class PredictionSummary:
    """Counts a user checks first: every file found is either predicted or listed as an error."""

    root: str
    files: int
    predicted: int
    errors: int
    predictions_csv: str
    errors_csv: str
    checkpoints: list[str]
    class_counts: dict[str, int] = field(default_factory=dict)
    overlays: str | None = None  # folder of Grad-CAM overlays (explain=true)


def list_files(root: str | Path) -> list[Path]:
    """Every non-hidden file under `root` (recursively, sorted); a missing/empty root is a DataError."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"predict_dir={root} does not exist; point it at a folder of images (sub-folders are searched too).")
    if not root.is_dir():
        raise DataError(f"predict_dir={root} is a file, not a folder; put the image(s) in a folder and pass that folder.")
    files = visible_files(root)
    if not files:
        raise DataError(f"predict_dir={root} contains no files.")
    return files


def refuse_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    """Stop before any work when an output exists and overwrite=true was not given."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{', '.join(existing)} already exist(s); refusing to overwrite. Pass overwrite=true, or choose another predictions=PATH."
        )


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def ensemble_probs(images: list[np.ndarray], modules: Sequence[BloodCellModule], device: torch.device) -> np.ndarray:
    """N×K probabilities averaged over the models, each fed the images at its own preprocessing."""
    per_model = []
    resized: dict[Preprocess, torch.Tensor] = {}
    for module in modules:
        key = module.preprocessing
        if key not in resized:
            batch = np.stack([key(img) for img in images])
            resized[key] = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
        logits = module(resized[key].to(device))
        per_model.append(logits.float().softmax(dim=-1).cpu().numpy())
    return average_probs(per_model)


def predict_folder(
    checkpoints: Sequence[str],
    root: str | Path,
    predictions_csv: str | Path,
    *,
    device: str | torch.device,
    batch_size: int,
    errors_csv: str | Path | None = None,
    overwrite: bool = False,
    num_threads: int | None = None,
    progress: bool | None = None,
    explain: bool = False,
) -> PredictionSummary:
    """Predict every file under `root`; write predictions and errors CSVs and a summary JSON beside them.

    explain=True also writes one Grad-CAM overlay PNG per predicted image under `overlays/` beside the CSV.

    `device` and `batch_size` have no default here: evaluate.py passes conf/evaluate.yaml's (`run_predict`).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be ≥ 1.")
    predictions_csv = Path(predictions_csv)
    errors_csv = Path(errors_csv) if errors_csv else predictions_csv.with_name(predictions_csv.stem + "_errors.csv")
    summary_json = predictions_csv.with_suffix(".json")
    overlay_dir = predictions_csv.parent / "overlays"
    refuse_overwrite([predictions_csv, errors_csv, summary_json, *([overlay_dir] if explain else [])], overwrite)
    files = list_files(root)
    device = resolve_device(device)
    members = load_members(checkpoints)
    modules = [m.module.to(device).eval() for m in members]
    if explain:
        common_preprocess(members)  # one heat-map per image needs one preprocessing
    classes = list(modules[0].classes)

    predictions_csv.parent.mkdir(parents=True, exist_ok=True)
    errors_csv.parent.mkdir(parents=True, exist_ok=True)
    partial_pred = predictions_csv.with_name(predictions_csv.name + ".partial")
    partial_err = errors_csv.with_name(errors_csv.name + ".partial")
    counts = np.zeros(len(classes), dtype=np.int64)
    n_pred = n_err = 0
    show = progress if progress is not None else len(files) >= 200
    threads = num_threads or min(8, os.cpu_count() or 1)
    with open(partial_pred, "w", newline="") as fp, open(partial_err, "w", newline="") as fe, ThreadPoolExecutor(threads) as pool:
        pred_writer, err_writer = csv.writer(fp), csv.writer(fe)
        pred_writer.writerow(PREDICTION_COLUMNS)
        err_writer.writerow(ERROR_COLUMNS)
        bar = tqdm(total=len(files), desc=f"predict {Path(root).name}", unit="img", disable=not show, mininterval=1.0)
        for chunk in _chunks(files, batch_size):
            decoded = list(pool.map(decode_file, chunk))
            good = [(path, img) for path, (img, _) in zip(chunk, decoded) if img is not None]
            for path, (_, why) in zip(chunk, decoded):
                if why is not None:
                    err_writer.writerow([str(path), why])
                    n_err += 1
            if good:
                probs = ensemble_probs([img for _, img in good], modules, device)
                top = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K]
                for (path, _), p, t in zip(good, probs, top):
                    row = [str(path)]
                    for k in range(TOP_K):
                        row += [classes[t[k]], f"{p[t[k]]:.6f}"] if k < len(t) else ["", ""]
                    pred_writer.writerow(row)
                    counts[t[0]] += 1
                n_pred += len(good)
                if explain:
                    write_overlays(members, [img for _, img in good], [path for path, _ in good], Path(root), overlay_dir, batch_size)
            bar.update(len(chunk))
        bar.close()
    os.replace(partial_pred, predictions_csv)
    os.replace(partial_err, errors_csv)
    summary = PredictionSummary(
        root=str(Path(root).expanduser().resolve()),
        files=len(files),
        predicted=n_pred,
        errors=n_err,
        predictions_csv=str(predictions_csv),
        errors_csv=str(errors_csv),
        checkpoints=[str(Path(c).resolve()) for c in checkpoints],
        class_counts={c: int(n) for c, n in zip(classes, counts)},
        overlays=str(overlay_dir) if explain else None,
    )
    write_json(summary.__dict__, summary_json)
    log.info("predicted %d of %d file(s) under %s → %s", n_pred, len(files), root, predictions_csv)
    if n_err:
        log.warning("%d file(s) could not be read; listed with the reason in %s", n_err, errors_csv)
    return summary


def run_predict(cfg: DictConfig) -> dict:
    """evaluate.py with predict_dir=DIR: predictions for a folder of unlabelled images."""
    checkpoints = require_checkpoints(cfg.get("ckpt"))
    out = cfg.get("predictions") or str(Path(cfg.output_dir) / "predictions.csv")
    summary = predict_folder(
        checkpoints, str(cfg.predict_dir), out, device=cfg.device, batch_size=int(cfg.batch_size), overwrite=bool(cfg.overwrite),
        explain=explain_mode(cfg.get("explain")) is not None,
    )
    return summary.__dict__
