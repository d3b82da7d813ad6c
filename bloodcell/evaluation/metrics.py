"""Classification metrics from predicted probabilities (torchmetrics confusion matrix underneath)."""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix


def confusion_matrix(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """K×K counts, rows = true class, columns = predicted class."""
    probs = torch.as_tensor(np.asarray(probs)) if not isinstance(probs, torch.Tensor) else probs
    labels = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    preds = probs.argmax(dim=1)
    return multiclass_confusion_matrix(preds, labels.long(), num_classes).cpu().numpy().astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, classes: list[str]) -> dict:
    """accuracy, balanced accuracy (mean recall over classes present), macro F1 (over classes seen in
    labels or predictions, as scikit-learn does) and per-class precision/recall/F1/support."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    seen = present | (predicted > 0)
    total = cm.sum()
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[seen].mean()) if seen.any() else float("nan"),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
    }


def classification_metrics(probs, labels, classes: list[str]) -> dict:
    cm = confusion_matrix(probs, labels, len(classes))
    out = metrics_from_confusion(cm, classes)
    out["confusion_matrix"] = cm.tolist()
    return out


def average_probs(probs: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """Ensemble: weighted mean of per-model N×K probabilities (weights normalised to sum 1)."""
    if not probs:
        raise ValueError("average_probs needs at least one probability array")
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on shape: {sorted(shapes)}")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(probs) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"ensemble weights {list(w)} must be {len(probs)} non-negative numbers with a positive sum")
    w = w / w.sum()
    return np.tensordot(w, np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axes=1)
