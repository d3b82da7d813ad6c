"""Files a person reads: metrics.json and the confusion-matrix picture drawn from it."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
    return path


def plot_confusion_matrix(cm: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised colours (recall per true class) with raw counts written in each cell."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 * k + 2.5, 1.0 * k + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_summary(metrics: dict, classes: list[str]) -> str:
    """Plain-text table printed to the console."""
    lines = [
        f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  balanced_accuracy={metrics['balanced_accuracy']:.4f}  macro_f1={metrics['macro_f1']:.4f}",
        f"{'class':<22}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(f"{c:<22}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9d}")
    return "\n".join(lines)
