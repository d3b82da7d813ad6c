"""Collect scripts/measure_pbc128.sh or measure_transfer.sh results into OUT/results.md (+ results.json): one row per model/ensemble."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(out: Path) -> None:
    rows = []
    names = sorted({p.name.removeprefix("eval_") for p in out.glob("eval_*")})
    for name in names:
        rob = load(out / f"eval_{name}" / "robustness.json") or {}
        s = rob.get("summary", {})
        shift = load(out / f"labshift_{name}" / "metrics.json") or {}
        train = load(out / name / "summary.json") or {}
        rows.append({
            "model": name,
            "epochs": train.get("epochs"),
            "s_per_epoch": train.get("seconds_per_epoch"),
            "val_acc": s.get("val_acc"),
            "test_acc": s.get("test_acc"),
            "test_bal_acc": (load(out / f"eval_{name}" / "metrics.json") or {}).get("balanced_accuracy"),
            "bmk_acc": s.get("bmk_acc"),
            "mean_corruption_acc": s.get("mean_corruption_acc"),
            "labshift_acc": shift.get("accuracy"),
        })
    cols = list(rows[0]) if rows else []
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    plot_val_curves(out, [r["model"] for r in rows])


def plot_val_curves(out: Path, names: list[str]) -> None:
    """OUT/val_curves.png: validation accuracy per epoch of every trained run (from its CSV log)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        logs = sorted((out / name / "logs").rglob("metrics.csv")) if (out / name / "logs").is_dir() else []
        if not logs:
            continue
        points = {}
        for path in logs:  # a resumed run has one CSV per part; later rows win
            for row in csv.DictReader(path.open()):
                if row.get("val/acc"):
                    points[int(row["epoch"]) + 1] = float(row["val/acc"])
        if points:
            ax.plot(list(points), list(points.values()), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "val_curves.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
