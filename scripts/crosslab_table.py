"""Collect scripts/measure_crosslab.sh results into OUT/results.md, results.json and results.png (one row per method).

    python scripts/crosslab_table.py OUT                                   # results.md/json/png (4 decimals, seed means)
    python scripts/crosslab_table.py OUT --docs README.md docs/results/crosslab/README.md   # + the rounded tables there
    python scripts/crosslab_table.py OUT --previous docs/results/crosslab/results.json --docs ...   # + earlier rows
Columns: clean test accuracy, Bmk, mean corruption accuracy (severity 3), lab-shift copy accuracy, and per cross-lab folder
accuracy and macro recall over the classes it holds; seconds per epoch and epochs from the training summary.
The documentation tables (OUT/results_docs.md) add what each row is (ROWS, in table order) and the per-class recall on
the first cross-lab folder; `--docs FILE ...` replaces the tables with the same header line in those files.
`--previous JSON` keeps the rows of an earlier results.json (the committed one) that OUT does not hold, since a measurement
folder does not outlive its machine; their per-class recall comes from the crosslab_<row>.json files beside that JSON.
A row measured again in OUT replaces its earlier figures.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

# row name → what it is, in the order of the documentation tables; rows not listed follow, undescribed
ROWS = {
    "pipeline": "baseline: `augment=pipeline`",
    "pipeline_s7": "the same, seed 7",
    "tta_scales": "baseline + `tta=scales` (test time only)",
    "tta_scales_s7": "the same, seed 7",
    "scale_cell": "`data.preprocess.scale=cell` (magnification normaliser)",
    "stain_aug": "`augment.stain_aug.*` (RandStainNA 0.5, HEStain 0.2, channel mix 0.3, grey 0.1)",
    "stain_scale_mixstyle": "stain_aug + `augment.scale_range=[0.5,1.6]` + `model.mixstyle.p=0.5` (first `robust`)",
    "stain_scale_mixstyle_cell": "the same + `scale=cell`",
    "randconv": "`batch_augment=randconv` (random convolutions)",
    "randconv_s7": "the same, seed 7",
    "randconv_tta_scales": "`randconv` + `tta=scales` (test time only)",
    "randconv_tta_scales_s7": "the same, seed 7",
    "randconv_cell": "`batch_augment=randconv` + `data.preprocess.scale=cell`",
    "fourier": "**`batch_augment=fourier` (Fourier-amplitude mixing; = `experiment=robust`)**",
    "fourier_s7": "the same, seed 7",
    "fourier_tta_scales": "`fourier` + `tta=scales` (test time only)",
    "fourier_tta_scales_s7": "the same, seed 7",
    "ens_fourier2": "ensemble: `fourier` + `fourier_s7` averaged (two trainings; `ckpt=[A,B]`)",
    "randconv_fourier": "`batch_augment=randconv_fourier` (RandConv, then Fourier mixing)",
    "reinhard": "`data.preprocess.colour=reinhard` (torchstain: per-image LAB statistics mapped to the pbc128 median)",
    "white_balance": "`data.preprocess.colour=white_balance` (the smear background scaled to the PBC background colour)",
    "mixstyle": "`model.mixstyle.p=0.5` (MixStyle alone)",
    "gpu_cpu_pipeline": "H100, 8 epochs: the baseline (`augment=pipeline`), trained from the 96 px WebP copy",
    "gpu_batch_pipeline": "H100, 8 epochs: `augment=none batch_augment=pipeline` (the pipeline on the GPU)",
    "gpu_robust": "H100: `experiment=robust trainer=gpu` (20 epochs)",
    "pipeline_webp": "CPU: the baseline trained from the 96 px WebP copy the H100 rows used (`pbc96.zip`)",
    "pipeline_webp_s7": "the same, seed 7",
    "pipeline_bicubic": "CPU: the baseline trained from a BICUBIC 96 px copy (lossless PNG)",
    "pipeline_bicubic_s7": "the same, seed 7",
    "pipeline_box_webp": "CPU: the baseline trained from a BOX (the cache's resize) 96 px copy stored as WebP 85",
    "pipeline_box_webp_s7": "the same, seed 7",
    "reencode_webp_eval": "`pipeline_box_webp`'s weights with `data.preprocess.reencode=webp` (every test image re-encoded too)",
    "train_webp": "`augment.train_webp.p=1.0` (WebP 85 on every training image first; test images as stored)",
    "train_webp_s7": "the same, seed 7",
    "fourier_train_webp": "`batch_augment=fourier augment.train_webp.p=1.0` (`experiment=robust` + the WebP training step)",
    "fourier_train_webp_s7": "the same, seed 7",
    "fourier_bicubic": "`batch_augment=fourier` (`experiment=robust`) trained from the BICUBIC copy; test images through the cache's BOX",
    "fourier_downsample_bicubic": ("`batch_augment=fourier data.preprocess.downsample=bicubic` "
                                   "(the same pixels in training; test images shrunk alike)"),
    "fourier_downsample_bicubic_s7": "the same, seed 7",
    "bicubic_eval": "`pipeline_bicubic`'s weights with `data.preprocess.downsample=bicubic` (= the option: test images shrunk BICUBIC too)",
    "bicubic_eval_s7": "the same, seed 7",
    "scale_wide": "`augment.scale_range=[0.5,1.6]` (wider scale augmentation alone)",
    "fourier_mix": "`batch_augment=fourier` + CutMix/MixUp as in `gpu_best` (α 0.2 / 1.0, p 0.5, off for the last 2 of 8 epochs)",
    "context": "`data.preprocess.scale=cell data.preprocess.context=suppress` (the scale normaliser + the field around the cell faded)",
    "fourier_128": "`batch_augment=fourier data.image_size=128` (`experiment=robust` at the files' native 128 px)",
    "lite1_fourier": "`batch_augment=fourier model=effnet_lite1` (`experiment=robust` on EfficientNet-Lite1, 96 px)",
    "fourier_epochs": "`batch_augment=fourier`, every epoch's checkpoint kept (`fourier` run again: the fine-tuned end)",
    "fourier_head_only": "its epoch 0: the head trained on the frozen ImageNet backbone, before any fine-tuning",
    "fourier_wise": "WiSE-FT: the weight-space mean 0.5 × `fourier_head_only` + 0.5 × `fourier_epochs`, BatchNorm statistics averaged too",
    "fourier_wise_bn": "the same, BatchNorm statistics re-estimated on 2048 clean training images (`bn_images=2048`)",
    "fourier_swa": "SWA: the mean of `fourier_epochs`' epochs 4–7 (second half), BatchNorm re-estimated likewise (`bn_images=2048`)",
    "fourier_swa_avgbn": "the same, BatchNorm statistics averaged (`bn_images=0`, the tool's default)",
    "fourier_freeze_bn": "`batch_augment=fourier model.freeze_bn=true` (backbone BatchNorm keeps its ImageNet statistics)",
    "ens_fourier5": "ensemble of this machine's five Fourier trainings (`fourier_epochs`, `_freeze_bn`, `_128`, `lite1_`, `_unfreeze_all`)",
    "fourier_unfreeze_all": "`batch_augment=fourier model.unfreeze_stages=-1` (all of the backbone trained after epoch 0, as `gpu_best`)",
    "fourier_192_2ep": "`batch_augment=fourier data.image_size=192 trainer.max_epochs=2` (robust at 192 px, ~30 CPU min)",
    "fourier_fixres_192": "`fourier_epochs` + 1 epoch at 192 px (`init_from=` its checkpoint, LR 1e-4; FixRes-style second stage)",
    "fourier_fixres_192_2ep": "the same second stage with 2 epochs at 192 px (`trainer.max_epochs=2`)",
    "fourier_sam": "`batch_augment=fourier sam.rho=0.05` (sharpness-aware minimisation; two passes per step)",
    "fourier_cell": "`batch_augment=fourier data.preprocess.scale=cell` (Fourier mixing + the magnification normaliser)",
    "fourier_kd": "`batch_augment=fourier distill.teacher=` `lite0_gpu_fourier_192` (distilled from the 192 px H100 model, weight 1, T 1)",
    "fourier_consist": "`batch_augment=fourier` on a second view of each image (p 1) + `consistency.weight=12` (JS between the views)",
    "fourier_low": "`batch_augment=fourier batch_augment.ops.0.frequencies=low` (only ≤ 0.09 cycles/pixel mixed: colour, shading)",
    "fourier_high": "`batch_augment=fourier batch_augment.ops.0.frequencies=high` (only > 0.09 cycles/pixel: texture, sharpness)",
    "gpu_best": "H100: `experiment=gpu_best` (Lite2, 96 → 192 px, batch pipeline, CutMix/MixUp, 30 epochs)",
    "gpu_best_fourier": "H100: `experiment=gpu_best batch_augment=pipeline_fourier` (+ Fourier mixing on the GPU)",
    "gpu_best_fourier_s7": "the same, seed 7",
    "ens_gpu_best_fourier2": "ensemble: `gpu_best_fourier` + `gpu_best_fourier_s7` averaged (`ckpt=[A,B]`)",
    "gpu_best_s7": "H100: `experiment=gpu_best` as it was (`batch_augment=pipeline`), seed 7",
    "gpu_best_fourier_96": "H100: `gpu_best_fourier` at 96 px (Lite2, `data.image_size=96`; side by side with the next)",
    "lite0_gpu_fourier_192": "H100: `gpu_best_fourier` on Lite0 at 192 px (`model=effnet_lite0`)",
    "lite0_gpu_fourier_192_s7": "H200: the same, seed 7 (side by side with the next)",
    "lite0_gpu_fourier_256_s7": "H200: the same at 256 px (`data.image_size=256`), seed 7",
}
NOTES = {"pipeline": "*", "tta_scales": "*", "reinhard": "*", "pipeline_webp": "*", "pipeline_webp_s7": "*",
         "pipeline_bicubic": "*", "pipeline_box_webp": "*", "train_webp": "*",  # see the docs' footnotes
         "train_webp_s7": "§", "fourier_train_webp": "*", "fourier_fixres_192": "*", "fourier_fixres_192_2ep": "*",
         "fourier_sam": "*", "fourier_cell": "*", "fourier_kd": "*", "fourier_low": "*", "fourier_high": "*",
         "randconv": "†", "randconv_tta_scales": "†",
         "gpu_cpu_pipeline": "‡", "gpu_batch_pipeline": "‡", "gpu_robust": "‡", "gpu_best": "‡",
         "gpu_best_fourier": "‡", "gpu_best_fourier_s7": "‡", "gpu_best_s7": "‡", "gpu_best_fourier_96": "‡",
         "lite0_gpu_fourier_192": "‡", "lite0_gpu_fourier_192_s7": "‡", "lite0_gpu_fourier_256_s7": "‡"}


SEED_SUFFIX = re.compile(r"_s(\d+)$")  # NAME = seed 42, NAME_s7 = seed 7, ...


def method_and_seed(name: str) -> tuple[str, str]:
    match = SEED_SUFFIX.search(name)
    return (name[: match.start()], match[1]) if match else (name, "42")


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
        groups.setdefault(method_and_seed(r["method"])[0], []).append(r)
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


def with_previous(rows: list[dict], previous: Path) -> list[dict]:
    """Earlier rows (a results.json) OUT does not hold, in their order, then OUT's rows: a row measured again wins."""
    measured = {r["method"] for r in rows}
    return [r for r in load(previous).get("rows", []) if r["method"] not in measured] + rows


def crosslab_result(out: Path, name: str, previous_dir: Path | None) -> dict:
    """A row's crosslab.json: from OUT/eval_NAME, else the committed copy crosslab_NAME.json beside --previous."""
    fresh = out / f"eval_{name}" / "crosslab.json"
    return load(fresh if fresh.is_file() or previous_dir is None else previous_dir / f"crosslab_{name}.json")


def intervals(result: dict) -> dict:
    """A folder result's 95 % bootstrap intervals: its own, or (rows evaluated before intervals existed) the same
    stratified bootstrap from its confusion matrix (conf/evaluate.yaml's resamples, seed 0: identical either way)."""
    if "ci95" in result:
        return result["ci95"]
    from bloodcell.config import yaml_defaults
    from bloodcell.evaluation.metrics import bootstrap_intervals

    return bootstrap_intervals(result["confusion_matrix"], yaml_defaults("evaluate.yaml", ["bootstrap"])["bootstrap"])


def docs_tables(out: Path, rows: list[dict], means: list[dict], previous_dir: Path | None = None) -> list[list[str]]:
    """The rounded tables of the README and docs/results/crosslab: rows with descriptions, seed means, per-class recall."""
    by_name = {r["method"]: r for r in rows}
    order = [n for n in ROWS if n in by_name] + [n for n in by_name if n not in ROWS]
    folder = next((k.removesuffix("_macro_recall") for r in rows for k in r if k.endswith("_macro_recall")), None)
    f3 = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    table = [f"| row | method | clean test | Bmk | mean corruption (s3) | labshift | {folder} accuracy | {folder} macro recall | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in order:
        r, sp = by_name[n], by_name[n].get("s_per_epoch")
        table.append(f"| {n} | {ROWS.get(n, '')} | {f3(r.get('test_acc'))} | {f3(r.get('bmk_acc'))} | {f3(r.get('mean_corruption_acc'))} | "
                     f"{f3(r.get('labshift_acc'))} | {f3(r.get(f'{folder}_acc'))} | {f3(r.get(f'{folder}_macro_recall'))} | "
                     f"{'—' if sp is None else format(sp, '.0f')}{NOTES.get(n, '')} |")
    cols = ["test_acc", "bmk_acc", "mean_corruption_acc", "labshift_acc", f"{folder}_acc", f"{folder}_macro_recall"]
    seeds = [f"| method | seeds | clean test | Bmk | mean corruption (s3) | labshift | {folder} accuracy | {folder} macro recall |",
             "|---|---|---|---|---|---|---|---|"]
    for m in means:
        seeds_run = {seed for method, seed in map(method_and_seed, by_name) if method == m["method"]}
        seed_list = ", ".join(sorted(seeds_run, key=lambda x: -int(x)))
        seeds.append(f"| {m['method']} | {seed_list} | " + " | ".join(
            f"{m[c]:.3f} ± {m[c + '_half_range']:.3f}" if c in m else "" for c in cols) + " |")
    per_class = []
    for n in order:
        result = crosslab_result(out, n, previous_dir).get("folders", {}).get(folder)
        if result:
            if not per_class:
                classes = result["classes_present"]
                per_class = ["| row | " + " | ".join(classes) + " | macro F1 | accuracy 95 % CI | macro recall 95 % CI |",
                             "|---" * (len(classes) + 4) + "|"]
            ci = intervals(result)
            per_class.append(f"| {n} | " + " | ".join(f"{result['recall'][c]:.2f}" for c in classes) + f" | {result['macro_f1']:.3f} | "
                             + " | ".join("{:.2f}–{:.2f}".format(*ci[k]) for k in ("accuracy", "macro_recall")) + " |")
    return [t for t in (table, seeds if len(seeds) > 2 else [], per_class) if t]


def replace_tables(path: Path, tables: list[list[str]]) -> int:
    """Each table replaces the markdown table in `path` that starts with the same header line; returns how many did."""
    lines, done = path.read_text().split("\n"), 0
    for table in tables:
        if table[0] in lines:
            i = j = lines.index(table[0])
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            lines[i:j], done = table, done + 1
    path.write_text("\n".join(lines))
    return done


def main(out: Path, docs: list[Path] | None = None, previous: Path | None = None) -> None:
    if previous is not None and not previous.is_file():
        sys.exit(f"--previous {previous}: no such results.json (the committed one is docs/results/crosslab/results.json)")
    rows = collect(out) if previous is None else with_previous(collect(out), previous)
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
    tables = docs_tables(out, rows, means, previous.parent if previous else None)
    (out / "results_docs.md").write_text("\n\n".join("\n".join(t) for t in tables) + "\n")
    for path in docs or []:
        print(f"{path}: {replace_tables(path, tables)} table(s) updated")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the measure_crosslab.sh output folder")
    parser.add_argument("--previous", type=Path, help="an earlier results.json whose rows OUT lacks are kept")
    parser.add_argument("--docs", type=Path, nargs="+", help="markdown files whose tables are replaced")
    args = parser.parse_args()
    main(args.out, args.docs, args.previous)
