"""Collect scripts/measure_crosslab.sh results into OUT/results.md, results.json and results.png (one row per method).

    python scripts/crosslab_table.py OUT
Columns: clean test accuracy, Bmk, mean corruption accuracy (severity 3), lab-shift copy accuracy, and per cross-lab folder
accuracy and macro recall over the classes it holds; seconds per epoch and epochs from the training summary.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(out: Path) -> list[dict]:
    rows = []
    for eval_dir in sorted(out.glob("eval_*"), key=lambda p: p.stat().st_mtime):
        name = eval_dir.name.removeprefix("eval_")
        metrics, rob = load(eval_dir / "metrics.json"), load(eval_dir / "robustness.json").get("summary", {})
        train_run = name.replace("_tta_scales", "").replace("tta_scales", "pipeline")  # TTA rows reuse a training run
        summary = load(out / train_run / "summary.json")
        row = {"method": name, "test_acc": metrics.get("accuracy"), "bmk_acc": rob.get("bmk_acc"),
               "mean_corruption_acc": rob.get("mean_corruption_acc"),
               "labshift_acc": load(out / f"labshift_{name}" / "metrics.json").get("accuracy")}
        for folder, r in (metrics.get("crosslab") or {}).items():
            row[f"{folder}_acc"], row[f"{folder}_macro_recall"] = r["accuracy"], r["macro_recall"]
        row["s_per_epoch"], row["epochs"] = summary.get("seconds_per_epoch"), summary.get("epochs")
        rows.append(row)
    return rows


def seed_means(rows: list[dict], cols: list[str]) -> list[dict]:
    """Methods measured with more than one seed (`NAME` = seed 42, `NAME_s7` = seed 7, ...): mean and half-range per column."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"_s\d+$", "", r["method"]), []).append(r)
    out = []
    for method, members in groups.items():
        if len(members) < 2:
            continue
        row = {"method": method, "seeds": len(members)}
        for c in cols:
            vals = [m[c] for m in members if isinstance(m.get(c), float)]
            if len(vals) == len(members):
                row[c], row[f"{c}_half_range"] = sum(vals) / len(vals), (max(vals) - min(vals)) / 2
        out.append(row)
    return out


def plot(rows: list[dict], cols: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(4.0 + 0.9 * len(rows), 4.0))
    width = 0.8 / len(cols)
    for k, col in enumerate(cols):
        vals = [r.get(col) or 0.0 for r in rows]
        ax.bar(np.arange(len(rows)) + k * width, vals, width, label=col.replace("_", " "))
    ax.set_xticks(np.arange(len(rows)) + width * (len(cols) - 1) / 2, [r["method"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("accuracy / macro recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(out: Path) -> None:
    rows = collect(out)
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "method"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) and v <= 1.0 else ("" if v is None else str(v))  # noqa: E731
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + r["method"] + " | " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    metric_cols = [c for c in cols if c not in ("s_per_epoch", "epochs")]
    means = seed_means(rows, metric_cols)
    if means:
        lines += ["", "Mean over seeds (± half the range between seeds):", "",
                  "| method | seeds | " + " | ".join(metric_cols) + " |", "|---" * (len(metric_cols) + 2) + "|"]
        lines += ["| " + m["method"] + f" | {m['seeds']} | " + " | ".join(
            f"{m[c]:.4f} ± {m[c + '_half_range']:.4f}" if c in m else "" for c in metric_cols) + " |" for m in means]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": rows, "seed_means": means}, indent=1))
    plot(rows, metric_cols, out / "results.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
