"""Classification metrics from predicted probabilities (torchmetrics confusion matrix underneath)."""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from bloodcell.errors import ConfigError


def confusion_matrix(probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """K×K counts, rows = true class, columns = predicted class."""
    probs = torch.as_tensor(np.asarray(probs)) if not isinstance(probs, torch.Tensor) else probs
    labels = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    preds = probs.argmax(dim=1)
    return multiclass_confusion_matrix(preds, labels.long(), num_classes).cpu().numpy().astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, classes: list[str]) -> dict:
    """accuracy, balanced accuracy (mean recall) and macro F1, both over the classes present in the labels, and
    per-class precision/recall/F1/support.

    Averaging over the classes present, not over all 8: a folder from another lab may hold only some classes, and
    a class it does not contain has no recall to average (an all-platelet folder at 0.94 accuracy would otherwise
    report macro F1 0.14 from the classes its few errors went to). Their false positives still lower the precision,
    hence the F1, of the classes present.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    total = cm.sum()
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
    }


def classification_metrics(probs, labels, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class scores and confusion matrix from probabilities (torchmetrics)."""
    cm = confusion_matrix(probs, labels, len(classes))
    out = metrics_from_confusion(cm, classes)
    out["confusion_matrix"] = cm.tolist()
    return out


MIN_RESAMPLES = 100  # fewer cannot place a 2.5 % / 97.5 % percentile on more than a couple of draws


def check_bootstrap(resamples: object) -> int:
    """A user's number of bootstrap resamples as an int: 0 (no intervals) or at least MIN_RESAMPLES; anything else is a
    clear error naming the setting (checked before the slow part of an evaluation)."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or 0 < resamples < MIN_RESAMPLES or resamples < 0:
        raise ConfigError(f"bootstrap={resamples!r}: give a whole number of resamples, at least {MIN_RESAMPLES} (e.g. 2000), "
                          "or 0 for no intervals.")
    return resamples


def bootstrap_intervals(cm: np.ndarray, resamples: int, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile intervals of accuracy and macro recall (over the classes present) from a stratified bootstrap of the images.

    Why: a cross-lab folder holds ~100 images, so one image is a point of accuracy and two models' rows differ by a few
    images; a number without its interval invites reading noise. Stratified: each class is resampled within itself, so
    every class present stays present with its own count (macro recall stays defined; the folder's class mix is its
    design, not a random draw). A class's right count in a resample is then Binomial(n_k, recall_k), so the confusion
    matrix is enough, and rows whose per-image predictions are gone get intervals too. Image sampling only: training
    another seed moves a row further (docs/results/crosslab); a class scored 100 % gets no width from its own images.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"interval level must lie in (0, 1), got {level}")
    cm = np.asarray(cm, dtype=np.int64)
    support, right = cm.sum(axis=1), np.diag(cm)
    present = support > 0
    if not present.any():
        raise ValueError("bootstrap intervals need at least one labelled image")
    n, k = support[present], right[present]
    recalls = np.random.default_rng(seed).binomial(n, k / n, size=(resamples, n.size)) / n
    q = [(1 - level) / 2, (1 + level) / 2]
    return {
        "accuracy": np.quantile(recalls @ n / n.sum(), q).tolist(),
        "macro_recall": np.quantile(recalls.mean(axis=1), q).tolist(),
        "level": level,
        "resamples": resamples,
        "method": "stratified percentile bootstrap over images",
    }


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: of the images exactly one model gets right, is the split further from 50:50
    than chance allows? (binomial test on the discordant pairs; 1.0 when there are none)."""
    from math import comb

    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = sum(comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2**m
    return float(min(1.0, 2 * tail))


def paired_comparison(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, resamples: int, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Model B minus model A on the same labelled images: accuracy and macro-recall differences with paired, stratified
    bootstrap intervals (both models scored on each resample), and McNemar's exact test on accuracy.

    Why paired: two rows' own intervals overlap widely on 100 images, yet they are scored on the same images, so most of
    that noise is shared; the difference's interval is the honest test of "B beats A".
    """
    labels, pred_a, pred_b = (np.asarray(x) for x in (labels, pred_a, pred_b))
    if not labels.shape == pred_a.shape == pred_b.shape or labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels and both predictions must be equal-length 1-D arrays, got {labels.shape}, {pred_a.shape}, {pred_b.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    right_a, right_b = pred_a == labels, pred_b == labels
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    rec_a, rec_b, sizes = [], [], []
    for c in classes:
        members = np.flatnonzero(labels == c)
        draw = members[rng.integers(0, members.size, size=(resamples, members.size))]
        rec_a.append(right_a[draw].mean(axis=1))
        rec_b.append(right_b[draw].mean(axis=1))
        sizes.append(members.size)
    rec_a, rec_b, sizes = np.stack(rec_a, 1), np.stack(rec_b, 1), np.asarray(sizes)
    q = [(1 - level) / 2, (1 + level) / 2]

    def macro(right: np.ndarray) -> float:
        return float(np.mean([right[labels == c].mean() for c in classes]))

    a_only, b_only = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {
        "n": int(labels.size),
        "accuracy": {"a": float(right_a.mean()), "b": float(right_b.mean()), "difference": float(right_b.mean() - right_a.mean()),
                     "interval": np.quantile((rec_b - rec_a) @ sizes / sizes.sum(), q).tolist()},
        "macro_recall": {"a": macro(right_a), "b": macro(right_b), "difference": macro(right_b) - macro(right_a),
                         "interval": np.quantile((rec_b - rec_a).mean(axis=1), q).tolist()},
        "a_only_right": a_only,
        "b_only_right": b_only,
        "mcnemar_p": mcnemar_exact_p(a_only, b_only),
        "level": level,
        "resamples": resamples,
        "method": "paired stratified percentile bootstrap over images; exact McNemar test",
    }


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


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """Equal-width confidence bins over (0, 1]: count, mean confidence and accuracy per bin (None when empty).

    Confidence is the top-class probability; a sample with confidence c lands in the bin whose
    upper edge is the first ≥ c (so 1.0 falls in the last bin).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, acc_sum / count, np.nan)
    as_list = lambda a: [None if np.isnan(v) else float(v) for v in a]  # noqa: E731  (JSON has no NaN)
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": as_list(mean_conf), "accuracy": as_list(accuracy)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE = Σ_bins (n_b / N) · |accuracy_b − confidence_b| over equal-width confidence bins."""
    bins = reliability_bins(probs, labels, n_bins)
    count = np.asarray(bins["count"], dtype=np.float64)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.nan_to_num(np.asarray(bins["accuracy"], dtype=float)) - np.nan_to_num(np.asarray(bins["confidence"], dtype=float)))
    return float((count * gap).sum() / count.sum())


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p(true class), probabilities floored at 1e-12."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), np.asarray(labels)], 1e-12, None)).mean())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): for a single model equal to softmax(logits / T); works on ensemble averages too."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of `apply_temperature(probs, T)` (fit on val)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_t: negative_log_likelihood(apply_temperature(probs, np.exp(log_t)), labels),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))
