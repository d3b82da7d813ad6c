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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
