"""Robustness columns of the reference study: accuracy on a built benchmark folder (clean, Bmk, corruptions)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bloodcell.evaluation.benchmark_sets import read_manifest
from bloodcell.evaluation.inference import InferenceSettings, Member, Predictions, ensemble_predict

log = logging.getLogger(__name__)


def npz_data_cfg(path: str | Path, cache_dir: str | Path | None) -> dict:
    """Data config for a benchmark .npz: every image, in file order, no dedup (corruptions may collide).

    Keys not named here come from conf/data/_common.yaml (see `datamodule_from_cfg`).
    """
    cfg = {"_target_": "bloodcell.data.BloodCellDataModule", "source": {"_target_": "bloodcell.data.NpzSource", "path": str(path)},
           "dedup": False, "val_fraction": 0.0, "test_fraction": 0.0, "resize_mode": "squash"}
    if cache_dir:
        cfg["cache_dir"] = str(cache_dir)
    return cfg


def accuracy_of(p: Predictions) -> float:
    """Top-1 accuracy of a set of predictions."""
    return float((p.probs.argmax(axis=1) == p.labels).mean())


def robustness(members: list[Member], benchmark_dir: str | Path, how: InferenceSettings, cache_dir: str | Path | None,
               val: Predictions | None, test_acc: float | None) -> dict:
    """Accuracy on the clean, Bmk and every corruption × severity set of a built benchmark folder."""
    folder, manifest = read_manifest(benchmark_dir)
    quiet = InferenceSettings(how.device, how.tta, how.loader_overrides, progress=False)

    def accuracy(rel: str) -> float:
        return accuracy_of(ensemble_predict(members, npz_data_cfg(folder / rel, cache_dir), "all", quiet))

    files = manifest["files"]
    clean_acc = accuracy("clean.npz") if "clean.npz" in files else None
    bmk_acc = accuracy("bmk.npz") if "bmk.npz" in files else None
    table: dict[str, dict[str, float]] = {}
    for name in manifest["corruptions"]:
        table[name] = {str(s): accuracy(f"corruptions/{name}_s{s}.npz") for s in manifest["severities"]}
        log.info("corruption %-16s %s", name, "  ".join(f"s{s}={a:.3f}" for s, a in table[name].items()))
    cells = [a for row in table.values() for a in row.values()]
    return {
        "summary": {"val_acc": accuracy_of(val) if val is not None else None, "test_acc": test_acc, "bmk_acc": bmk_acc,
                    "mean_corruption_acc": float(np.mean(cells)) if cells else None, "clean_benchmark_acc": clean_acc},
        "per_corruption_mean": {n: float(np.mean(list(r.values()))) for n, r in table.items()},
        "corruptions": table,
        "benchmark_dir": str(folder),
        "benchmark": {k: manifest[k] for k in ("seed", "split", "source", "image_size", "n") if k in manifest},
    }


def write_corruption_csv(table: dict[str, dict[str, float]], path: Path) -> Path:
    """corruption × severity accuracy table (plus each row's mean) as CSV."""
    sevs = sorted({s for row in table.values() for s in row}, key=int)
    lines = ["corruption," + ",".join(f"s{s}" for s in sevs) + ",mean"]
    for name, row in table.items():
        lines.append(f"{name}," + ",".join(f"{row[s]:.4f}" for s in sevs) + f",{np.mean([row[s] for s in sevs]):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path
