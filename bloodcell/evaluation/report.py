"""Files a person reads: metrics.json and the confusion-matrix picture drawn from it."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def write_json(obj: dict, path: str | Path) -> Path:
    """Write `obj` as indented JSON, creating the folder (every picture has such a file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))
    return path


def interval_text(result: dict, key: str, digits: int = 2) -> str:
    """" (95 % CI 0.51–0.68)" for a metric with a bootstrap interval in result["ci95"], "" without one."""
    ci = (result.get("ci95") or {}).get(key)
    return f" (95 % CI {ci[0]:.{digits}f}–{ci[1]:.{digits}f})" if ci else ""


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
        f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  balanced_accuracy={metrics['balanced_accuracy']:.4f}  "
        f"macro_f1={metrics['macro_f1']:.4f}",
        f"{'class':<22}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(f"{c:<22}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>9d}")
    return "\n".join(lines)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(bins: dict, path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with bin counts below."""
    edges = np.asarray(bins["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    conf = np.asarray(bins["confidence"], dtype=float)
    count = np.asarray(bins["count"])
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers, acc, width=width * 0.95, color="tab:blue", edgecolor="k", label="accuracy")
    gap_bottom = np.where(count > 0, np.minimum(acc, np.nan_to_num(conf)), 0)
    ax.bar(
        centers,
        np.where(count > 0, np.abs(np.nan_to_num(conf) - acc), 0),
        bottom=gap_bottom,
        width=width * 0.95,
        color="tab:red",
        alpha=0.35,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    axc.bar(centers, count, width=width * 0.95, color="grey")
    axc.set_xlabel("confidence (top-class probability)")
    axc.set_ylabel("count")
    axc.set_xlim(0, 1)
    return _save(fig, path)


def plot_corruption_heatmap(table: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Accuracy per corruption (rows) × severity (columns), each cell annotated."""
    names = list(table)
    sevs = sorted({s for row in table.values() for s in row}, key=int)
    grid = np.array([[table[n].get(s, np.nan) for s in sevs] for n in names], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 * len(sevs) + 3.5, 0.42 * len(names) + 1.6))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(sevs)), [f"s{s}" for s in sevs])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    for i in range(len(names)):
        for j in range(len(sevs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def write_predictions_csv(path: str | Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> Path:
    """One row per image: id, true and predicted class names, then one probability column per class."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    preds = np.asarray(probs).argmax(axis=1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "true", "predicted", *[f"p_{c}" for c in classes]])
        for i, (sid, y, p) in enumerate(zip(ids, labels, preds)):
            w.writerow([sid, classes[int(y)], classes[int(p)], *[f"{v:.6f}" for v in probs[i]]])
    return path


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def format_report_md(metrics: dict, classes: list[str], robustness: dict | None = None, extra: list[str] | None = None) -> str:
    """The human-readable report.md: what was evaluated, headline numbers, per class, calibration, robustness.

    `extra`: more sections (lines) placed right after the robustness summary, e.g. the cross-lab table.
    """
    lines = ["# Evaluation report", ""]
    for m in metrics["members"]:
        lines.append(f"- `{m['checkpoint']}` — {m['backbone']} at {m['image_size']} px, weight {m['weight']:.3g}")
    lines += ["", f"Data: {metrics['source']} · split `{metrics['split']}` · n = {metrics['n']} · TTA `{metrics['tta']}`", ""]
    if robustness:
        s = robustness["summary"]
        lines += [
            "## Robustness summary",
            "",
            "| val acc | test acc | Bmk acc | mean corruption acc |",
            "|---|---|---|---|",
            f"| {_fmt(s['val_acc'])} | {_fmt(s['test_acc'])} | {_fmt(s['bmk_acc'])} | {_fmt(s['mean_corruption_acc'])} |",
            "",
        ]
    lines += extra or []
    lines += [
        "## Metrics",
        "",
        "| accuracy | balanced accuracy | macro F1 | ECE | NLL |",
        "|---|---|---|---|---|",
        f"| {_fmt(metrics['accuracy'])}{interval_text(metrics, 'accuracy', 3)} | "
        f"{_fmt(metrics['balanced_accuracy'])}{interval_text(metrics, 'balanced_accuracy', 3)} | {_fmt(metrics['macro_f1'])} | "
        f"{_fmt(metrics['ece'])} | {_fmt(metrics['nll'])} |",
        "",
    ]
    cal = metrics.get("calibration")
    if cal:
        lines += [
            f"Temperature scaling fitted on the validation split: T = {cal['temperature']:.3f}; "
            f"ECE {_fmt(cal['ece_before'])} → {_fmt(metrics['ece'])}, NLL {_fmt(cal['nll_before'])} → {_fmt(metrics['nll'])}.",
            "",
        ]
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png) ![reliability diagram](reliability.png)", ""]
    if robustness and robustness.get("corruptions"):
        table = robustness["corruptions"]
        sevs = sorted({s for row in table.values() for s in row}, key=int)
        lines += [
            "## Accuracy per corruption × severity",
            "",
            "| corruption | " + " | ".join(f"s{s}" for s in sevs) + " | mean |",
            "|---|" + "---|" * (len(sevs) + 1),
        ]
        for name, row in table.items():
            vals = [row[s] for s in sevs]
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")
        lines += ["", "![corruption heatmap](corruption_heatmap.png)", ""]
    return "\n".join(lines) + "\n"


def plot_image_grid(tiles: list[list[np.ndarray]], captions: list[list[tuple[str, bool | None]]], row_labels: list[str],
                    path: str | Path, title: str = "") -> Path:
    """Rows of images, each with a caption coloured green (right), red (wrong) or black (None: no verdict); one label per row."""
    n_rows, n_cols = len(tiles), max((len(r) for r in tiles), default=0)
    fig, axes = plt.subplots(n_rows, max(n_cols, 1), figsize=(1.6 * max(n_cols, 1) + 1.2, 1.85 * n_rows + 0.4), squeeze=False)
    for i, (row, caps) in enumerate(zip(tiles, captions)):
        for j in range(axes.shape[1]):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j])
                text, right = caps[j]
                ax.set_title(text, fontsize=7, color="black" if right is None else "tab:green" if right else "tab:red")
        axes[i, 0].text(-0.12, 0.5, row_labels[i], transform=axes[i, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
