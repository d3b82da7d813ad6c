"""Cross-lab benchmark: accuracy on real images from other laboratories (folders of class sub-folders).

The judge of shift robustness that synthetic shifts (Bmk, corruptions, lab-shift copies) cannot replace. A cross-lab
folder may hold any subset of the 8 classes at any image size; every metric is averaged over the classes it contains.
Cross-lab folders are for evaluation only: `training.py` refuses one as a training source, and they are scored after
fitting, on the checkpoint the run already chose, so they never steer model selection.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bloodcell.errors import ConfigError
from bloodcell.evaluation.inference import InferenceSettings, Member, ensemble_predict
from bloodcell.evaluation.metrics import bootstrap_intervals, check_bootstrap, classification_metrics, paired_comparison
from bloodcell.evaluation.report import interval_text, plot_confusion_matrix, plot_image_grid, write_json, write_predictions_csv

log = logging.getLogger(__name__)


def folder_data_cfg(root: str | Path, cache_dir: str | Path | None = None) -> dict:
    """A `data=folder` config for an evaluation-only folder; keys it does not name come from conf/data/_common.yaml."""
    cfg = {"_target_": "bloodcell.data.BloodCellDataModule", "source": {"_target_": "bloodcell.data.FolderSource", "root": str(root)},
           "root": str(root), "num_workers": 0, "allow_missing_classes": True}
    if cache_dir:
        cfg["cache_dir"] = str(cache_dir)
    return cfg


def crosslab_folders(folders: Sequence[str | Path] | None) -> dict[str, Path]:
    """{display name: resolved folder}; names are the folder names (parent/name where two would clash)."""
    paths = [Path(f).expanduser().resolve() for f in (folders or [])]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise ConfigError(
            f"crosslab={missing}: no such folder; give folders with one sub-folder per class (e.g. ../shared/data/crosslab/zheng2)."
        )
    names = [p.name for p in paths]
    return {(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}"): p for p in paths}


def check_not_training_on(data_root: str | Path | None, folders: Sequence[str | Path] | None) -> None:
    """Refuse a training source that is, contains or lies inside a cross-lab folder (evaluation only, never training).

    Also checks that every cross-lab folder exists, so a typo stops the run before training, not after it.
    """
    resolved = crosslab_folders(folders)
    if not data_root:
        return
    root = Path(data_root).expanduser().resolve()
    for folder in resolved.values():
        if root == folder or folder in root.parents or root in folder.parents:
            raise ConfigError(
                f"data.root={root} overlaps the cross-lab folder {folder}: cross-lab images are for evaluation only. "
                "Train on another source and list the folder in crosslab=[...]."
            )


def crosslab_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], bootstrap: int = 0) -> dict:
    """n, classes present, accuracy, macro recall and macro F1 over the classes present, per-class recall, confusion matrix;
    with `bootstrap` resamples (> 0), 95 % intervals of accuracy and macro recall under "ci95"."""
    m = classification_metrics(probs, labels, classes)
    present = [c for c in classes if m["per_class"][c]["support"] > 0]
    out = {
        "n": m["n"],
        "classes_present": present,
        "accuracy": m["accuracy"],
        "macro_recall": m["balanced_accuracy"],
        "macro_f1": m["macro_f1"],
        "recall": {c: m["per_class"][c]["recall"] for c in present},
        "confusion_matrix": m["confusion_matrix"],
    }
    if check_bootstrap(bootstrap):
        out["ci95"] = bootstrap_intervals(np.array(m["confusion_matrix"]), bootstrap)
    return out


def evaluate_crosslab(members: list[Member], folders: Sequence[str | Path], how: InferenceSettings, output_dir: str | Path,
                      cache_dir: str | Path | None = None, bootstrap: int = 0) -> dict:
    """Score the members on every cross-lab folder; writes crosslab.json (with 95 % intervals from `bootstrap`
    resamples, if > 0) and one confusion-matrix PNG per folder."""
    output_dir = Path(output_dir)
    classes = members[0].module.classes
    results = {}
    for name, folder in crosslab_folders(folders).items():
        preds = ensemble_predict(members, folder_data_cfg(folder, cache_dir), "all", how)
        res = {"path": str(folder), **crosslab_metrics(preds.probs, preds.labels, classes, bootstrap)}
        stem = output_dir / f"crosslab_{name.replace('/', '_')}"
        plot_confusion_matrix(np.array(res["confusion_matrix"]), classes, f"{stem}_confusion.png",
                              title=f"{name}: acc {res['accuracy']:.3f}, macro recall {res['macro_recall']:.3f}")
        write_predictions_csv(f"{stem}_predictions.csv", preds.ids, preds.labels, preds.probs, classes)
        plot_prediction_grid([str(i) for i in preds.ids], preds.labels, preds.probs.argmax(axis=1), classes, f"{stem}_grid.png",
                             title=f"{name}: predictions (green right, red wrong)")
        for key, suffix in (("confusion_png", "confusion.png"), ("predictions_csv", "predictions.csv"), ("grid_png", "grid.png")):
            res[key] = f"{stem.name}_{suffix}"
        results[name] = res
        log.info("cross-lab %s: n=%d accuracy %.4f%s macro recall %.4f%s macro F1 %.4f", name, res["n"], res["accuracy"],
                 interval_text(res, "accuracy"), res["macro_recall"], interval_text(res, "macro_recall"), res["macro_f1"])
    write_json({"folders": results}, output_dir / "crosslab.json")
    return results


def plot_prediction_grid(files: list[str], labels: np.ndarray, preds: np.ndarray, classes: list[str], path: str | Path,
                         per_class: int = 8, title: str = "") -> Path:
    """One row per class present: up to `per_class` of its images (the files as they are), captioned with the prediction."""
    from bloodcell.data.images import read_image

    rows, caps, names = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)[:per_class]
        rows.append([thumbnail(read_image(files[i])) for i in idx])
        caps.append([(classes[int(preds[i])], bool(preds[i] == c)) for i in idx])
        names.append(classes[int(c)])
    return plot_image_grid(rows, caps, names, path, title)


def thumbnail(img: np.ndarray, size: int = 128) -> np.ndarray:
    """A square thumbnail of a whole image (centre crop to square, area resize): what a person recognises, not model input."""
    from bloodcell.data.images import resize_image

    return resize_image(img, size, "center_crop")


def read_predictions_csv(path: str | Path) -> dict[str, tuple[str, str]]:
    """{image id: (true class, predicted class)} from a predictions CSV written by an evaluation."""
    import csv

    with open(path, newline="") as f:
        return {row["id"]: (row["true"], row["predicted"]) for row in csv.DictReader(f)}


def before_after_grid(before_csv: str | Path, after_csv: str | Path, path: str | Path, per_class: int = 6,
                      names: tuple[str, str] = ("before", "after")) -> Path:
    """The same cross-lab images under two models: per class, images whose prediction changed first, captioned
    "before → after" and coloured by whether the second model is right."""
    before, after = read_predictions_csv(before_csv), read_predictions_csv(after_csv)
    if set(before) != set(after):
        raise ConfigError(f"{before_csv} and {after_csv} hold different images; give two evaluations of the same cross-lab folder.")
    from bloodcell.data.images import read_image

    by_class: dict[str, list[str]] = {}
    for image_id, (true, _) in sorted(before.items()):
        by_class.setdefault(true, []).append(image_id)
    rows, caps, labels = [], [], []
    for true, ids in by_class.items():
        ids = sorted(ids, key=lambda i: before[i][1] == after[i][1])[:per_class]  # changed predictions first
        rows.append([thumbnail(read_image(i)) for i in ids])
        caps.append([(f"{before[i][1][:11]} → {after[i][1][:11]}", after[i][1] == true) for i in ids])
        right = [sum(m[i][1] == true for i in by_class[true]) for m in (before, after)]
        labels.append(f"{true}\n{right[0]}→{right[1]} of {len(by_class[true])}")
    acc = [sum(m[i][1] == m[i][0] for i in m) / len(m) for m in (before, after)]
    title = f"{names[0]} → {names[1]}: accuracy {acc[0]:.2f} → {acc[1]:.2f} (caption green: {names[1]} right)"
    return plot_image_grid(rows, caps, labels, path, title)


def crosslab_summary(results: dict) -> dict:
    """The headline numbers per folder (what summary.json and metrics.json carry)."""
    keys = ("n", "classes_present", "accuracy", "macro_recall", "macro_f1", "ci95")
    return {name: {k: r[k] for k in keys if k in r} for name, r in results.items()}


def read_labelled_predictions(path: str | Path) -> dict[str, tuple[str, str]]:
    """read_predictions_csv with a clear error for a file that is not an evaluation's predictions CSV."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such predictions CSV; evaluate.py ... crosslab=[DIR] writes crosslab_<folder>_predictions.csv.")
    try:
        table = read_predictions_csv(path)
    except KeyError as e:
        raise ConfigError(f"{path}: no column {e}; give a predictions CSV written by evaluate.py "
                          "(columns id, true, predicted, p_*).") from None
    if not table:
        raise ConfigError(f"{path}: no images in the predictions CSV.")
    return table


def by_short_id(table: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Key rows by "class folder/file name" where that is unique, so two evaluations of one folder made under different
    paths (another machine, a moved checkout) still pair up; otherwise keep the full ids."""
    short = {"/".join(Path(i).parts[-2:]): v for i, v in table.items()}
    return short if len(short) == len(table) else table


def compare_predictions(csv_a: str | Path, csv_b: str | Path, resamples: int) -> dict:
    """Two models' predictions on the same labelled images (two evaluations of one cross-lab folder): B minus A, with
    paired bootstrap intervals and McNemar's test (metrics.paired_comparison). Refuses files over different images or
    labels, which would make the pairing meaningless."""
    a, b = (by_short_id(read_labelled_predictions(f)) for f in (csv_a, csv_b))
    if set(a) != set(b):
        raise ConfigError(f"{csv_a} and {csv_b} hold different images ({len(set(a) ^ set(b))} not in both); "
                          "give two evaluations of the same folder.")
    ids = sorted(a)
    if any(a[i][0] != b[i][0] for i in ids):
        raise ConfigError(f"{csv_a} and {csv_b} disagree on some true labels; give two evaluations of the same folder.")
    classes = sorted({a[i][0] for i in ids} | {a[i][1] for i in ids} | {b[i][1] for i in ids})
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[a[i][0]] for i in ids])
    result = paired_comparison(labels, np.array([index[a[i][1]] for i in ids]), np.array([index[b[i][1]] for i in ids]), resamples)
    return {"a": str(csv_a), "b": str(csv_b), **result}


def format_comparison(result: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """The comparison as a few lines a person reads: both scores, the difference and its interval, McNemar's p."""
    a, b = names
    lines = [f"{result['n']} images; {b} minus {a}, {int(result['level'] * 100)} % paired bootstrap intervals "
             f"({result['resamples']} resamples)"]
    for key, label in (("accuracy", "accuracy"), ("macro_recall", "macro recall")):
        r = result[key]
        lines.append(f"{label:<13} {a} {r['a']:.3f}  {b} {r['b']:.3f}  difference {r['difference']:+.3f} "
                     f"({r['interval'][0]:+.3f} to {r['interval'][1]:+.3f})")
    lines.append(f"right only by {a}: {result['a_only_right']}, only by {b}: {result['b_only_right']}; "
                 f"McNemar exact p = {result['mcnemar_p']:.3g}")
    return "\n".join(lines)


def comparison_table(results: list[dict]) -> list[str]:
    """Several models against one reference, as markdown rows (B minus A with paired intervals, McNemar's p)."""
    ref = results[0]["names"][0]
    lines = [f"| B (vs {ref}) | accuracy B − A | macro recall B − A | right only by A / only by B | McNemar p |", "|---|---|---|---|---|"]
    for r in results:
        acc, rec = r["accuracy"], r["macro_recall"]
        lines.append(f"| {r['names'][1]} | {acc['difference']:+.3f} ({acc['interval'][0]:+.3f} to {acc['interval'][1]:+.3f}) | "
                     f"{rec['difference']:+.3f} ({rec['interval'][0]:+.3f} to {rec['interval'][1]:+.3f}) | "
                     f"{r['a_only_right']} / {r['b_only_right']} | {r['mcnemar_p']:.2g} |")
    return lines


def format_crosslab_md(results: dict) -> list[str]:
    """report.md lines: one row per folder, then the per-class recall and the confusion matrices."""
    lines = ["## Images from other laboratories (cross-lab)", "",
             "Metrics over the classes each folder contains. Evaluation only: never trained on, never used to select a model.", "",
             "| folder | n | classes | accuracy | macro recall | macro F1 |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        scores = " | ".join(f"{r[k]:.4f}{interval_text(r, k)}" for k in ("accuracy", "macro_recall", "macro_f1"))
        lines.append(f"| {name} | {r['n']} | {len(r['classes_present'])} | {scores} |")
    lines.append("")
    if any("ci95" in r for r in results.values()):
        lines += ["Intervals: stratified bootstrap over the folder's images (each class resampled within itself). They show "
                  "how much a folder this size can say; to compare two models on it, use `python -m "
                  "bloodcell.tools.crosslab_compare A.csv B.csv` on their predictions CSVs (paired on the same images: "
                  "narrower than two intervals side by side suggest).", ""]
    for name, r in results.items():
        lines.append(f"{name} recall per class: " + ", ".join(f"{c} {v:.2f}" for c, v in r["recall"].items()))
        lines += ["", f"![{name} confusion matrix]({r['confusion_png']}) ![{name} predictions]({r['grid_png']})", ""]
    return lines
