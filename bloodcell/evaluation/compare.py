"""Same-budget comparison of augment configs: clean test split vs shifted test images.

    python -m bloodcell.tools.compare --out DIR [--augments none heavy pipeline] [--shifted DIR ...] \
        [--] data=pbc128 trainer.max_epochs=10 ...

Trains one model per augment config with identical overrides and seed (train.py in a subprocess,
so each run is an ordinary run folder), then evaluates every best checkpoint on (a) its clean test
split (written by train.py) and (b) each shifted set: the `--shifted` folders (e.g. the evaluation
issue's benchmark sets, `data=folder` layout) and, unless `--no-own-shift`, a seeded lab-shift copy
of the test split built by `bloodcell.augment.shift`. Writes DIR/compare.json and DIR/compare.png.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bloodcell.config import PROJECT_ROOT as ROOT
from bloodcell.errors import BloodcellError

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def train_one(augment: str, overrides: list[str], run_dir: Path) -> dict:
    """train.py augment=NAME <overrides> into run_dir (reused when it already finished there)."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, str(ROOT / "train.py"), f"augment={augment}", *overrides, f"hydra.run.dir={run_dir}"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(summary.read_text())


def own_shifted_set(ckpt: str, out_dir: Path, seed: int) -> Path:
    """The seeded lab-shift copy of the checkpoint's own test split (same split for every augment run)."""
    from bloodcell.augment.shift import shift_spec, write_shifted_split
    from bloodcell.checkpoint import load_module
    from bloodcell.evaluation.inference import datamodule_for

    module = load_module(ckpt)
    dm, _ = datamodule_for(module, None, {"num_workers": 0})
    test = dm.splits["test"]
    return write_shifted_split(test.images(), test.labels, dm.classes, out_dir, shift_spec(dm.cache_folder.name, "test", seed))


def folder_data_cfg(root: Path) -> dict:
    """A `data=folder` config for a shifted set; settings it does not name come from conf/data (datamodule_from_cfg)."""
    return {"_target_": "bloodcell.data.BloodCellDataModule", "source": {"_target_": "bloodcell.data.FolderSource", "root": str(root)},
            "root": str(root), "num_workers": 0}


def plot(rows: list[dict], sets: list[str], png: Path) -> None:
    """Bar chart: balanced accuracy of every augment config on every set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.6))
    width = 0.8 / len(sets)
    for k, name in enumerate(sets):
        vals = [r[name]["balanced_accuracy"] for r in rows]
        bars = ax.bar(np.arange(len(rows)) + k * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(rows)) + width * (len(sets) - 1) / 2, [r["augment"] for r in rows])
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def compare_augments(
    out: Path, augments: list[str], overrides: list[str], shifted: list[Path], own_shift: bool, shift_seed: int
) -> list[dict]:
    """Train one run per augment config, evaluate each on its clean test split and the shifted sets; write compare.json/png."""
    from bloodcell.evaluation.runner import evaluate_checkpoint

    if any(o.split("=", 1)[0] in ("augment", "hydra.run.dir") for o in overrides):
        raise BloodcellError("pass augment configs with --augments, not as overrides; the run folders are under --out.")
    if not own_shift and not shifted:
        raise BloodcellError("nothing shifted to evaluate on: give --shifted DIR or drop --no-own-shift.")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for augment in augments:
        summary = train_one(augment, overrides, out / f"train_{augment}")
        ckpt = summary["best_checkpoint"]
        if not ckpt or not summary.get("evaluation"):
            raise BloodcellError(f"the {augment} run wrote no checkpoint/test evaluation; check {out / f'train_{augment}'}.")
        clean = json.loads(Path(summary["evaluation"]).read_text())
        row = {
            "augment": augment,
            "checkpoint": ckpt,
            "fit_seconds": summary.get("fit_seconds"),
            "epochs": summary.get("epochs"),
            "clean_test": {m: clean[m] for m in METRICS},
        }
        shifted_sets = list(shifted)
        if own_shift:
            shifted_sets.insert(0, own_shifted_set(ckpt, out / "shifted_test", shift_seed))
        for root in shifted_sets:
            name = "lab_shift" if root == out / "shifted_test" else root.name
            result = evaluate_checkpoint(
                ckpt, folder_data_cfg(root.resolve()), "all", out / f"eval_{augment}_{name}", loader_overrides={"num_workers": 0}
            )
            row[name] = {m: result[m] for m in METRICS}
        rows.append(row)
        print(json.dumps(row), flush=True)
    sets = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    (out / "compare.json").write_text(json.dumps({"overrides": overrides, "shift_seed": shift_seed, "rows": rows}, indent=1))
    plot(rows, sets, out / "compare.png")
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table: balanced accuracy per set and fit seconds, one row per augment config."""
    sets = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    lines = ["| augment | " + " | ".join(f"{s} bal_acc" for s in sets) + " | fit s |", "|---" * (len(sets) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['augment']} | " + " | ".join(f"{r[s]['balanced_accuracy']:.3f}" for s in sets) + f" | {r['fit_seconds']} |")
    return "\n".join(lines)
