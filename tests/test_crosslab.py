"""Cross-lab benchmark: metrics over the classes a folder holds, evaluate.py crosslab=[...], train.py's summary,
and the evaluation-only guard."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcell.config import compose
from bloodcell.data.classes import CLASS_NAMES
from bloodcell.errors import ConfigError
from bloodcell.evaluation.crosslab import check_not_training_on, crosslab_folders, crosslab_metrics
from bloodcell.evaluation.runner import run
from bloodcell.training import train
from tests.conftest import FAST, ROOT, SAMPLE

CLASSES = list(CLASS_NAMES)
PLATELET = CLASSES.index("platelet")
ZHENG2 = ROOT.parent / "shared" / "data" / "crosslab" / "zheng2"


def onehot(preds: list[int]) -> np.ndarray:
    return np.eye(len(CLASSES))[preds]


def test_single_class_folder_is_scored_over_its_own_class():
    """An all-platelet folder at 0.94 accuracy: macro recall 0.94, macro F1 0.97, not 0.14 from absent classes."""
    labels = np.full(50, PLATELET)
    preds = [PLATELET] * 47 + [0, 1, 4]
    m = crosslab_metrics(onehot(preds), labels, CLASSES)
    assert m["n"] == 50 and m["classes_present"] == ["platelet"]
    assert m["accuracy"] == pytest.approx(0.94) and m["macro_recall"] == pytest.approx(0.94)
    assert m["macro_f1"] == pytest.approx(2 * 0.94 / 1.94)  # precision 1, recall 0.94
    assert m["recall"] == {"platelet": pytest.approx(0.94)}
    assert np.array(m["confusion_matrix"]).sum() == 50


def test_missing_classes_by_hand():
    """Lymphocytes (4) and monocytes (2), no other class; two lymphocytes called erythroblasts, one monocyte a lymphocyte."""
    ly, mo, er = CLASSES.index("lymphocyte"), CLASSES.index("monocyte"), CLASSES.index("erythroblast")
    labels = np.array([ly, ly, ly, ly, mo, mo])
    m = crosslab_metrics(onehot([ly, ly, er, er, mo, ly]), labels, CLASSES)
    assert m["classes_present"] == ["lymphocyte", "monocyte"]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["macro_recall"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    f1_ly = 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)  # precision 2/3 (one monocyte predicted lymphocyte)
    f1_mo = 2 * 1.0 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_ly + f1_mo) / 2)  # erythroblast (absent, only false positives) not averaged in


def other_lab(root: Path) -> Path:
    """A folder from 'another lab': 3 of the 8 classes under alias names, bigger non-square images."""
    for alias, cls in (("LY", "lymphocyte"), ("monocytes", "monocyte"), ("Neutrophil", "neutrophil")):
        (root / alias).mkdir(parents=True)
        for f in sorted((SAMPLE / cls).glob("*.jpg"))[:4]:
            Image.open(f).resize((150, 130)).save(root / alias / (f.stem + ".png"))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """A fast_dev_run small CNN whose train.py run also scores a cross-lab folder."""
    base = tmp_path_factory.mktemp("crosslab")
    lab = other_lab(base / "lab_b")
    out = base / "run"
    train(compose("train", ["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "~logger.tensorboard", "data.image_size=32",
                            f"crosslab=[{lab}]", f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", *FAST]))
    return out, lab


def test_train_summary_carries_the_crosslab_numbers(trained):
    out, lab = trained
    summary = json.loads((out / "summary.json").read_text())
    res = summary["crosslab"]["lab_b"]
    assert res["n"] == 12 and res["classes_present"] == ["lymphocyte", "monocyte", "neutrophil"]
    assert 0 <= res["macro_recall"] <= 1 and 0 <= res["accuracy"] <= 1
    full = json.loads((out / "eval" / "crosslab.json").read_text())["folders"]["lab_b"]
    assert full["path"] == str(lab.resolve()) and len(full["confusion_matrix"]) == 8
    for key in ("confusion_png", "grid_png", "predictions_csv"):
        assert (out / "eval" / full[key]).is_file(), key
    with open(out / "eval" / full["predictions_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["true"] for r in rows} == {"lymphocyte", "monocyte", "neutrophil"}
    assert sum(r["true"] == r["predicted"] for r in rows) == round(res["accuracy"] * 12)
    report = (out / "eval" / "report.md").read_text()
    assert "## Images from other laboratories (cross-lab)" in report
    lo, hi = res["ci95"]["accuracy"]  # the default resamples (conf/evaluate.yaml) also after train.py's fit
    assert lo <= res["accuracy"] <= hi and res["ci95"]["resamples"] == 2000
    assert f"{res['accuracy']:.4f} (95 % CI {lo:.2f}–{hi:.2f})" in report


def test_bootstrap_zero_gives_no_intervals_and_negative_is_refused(trained, tmp_path, cache_dir):
    out, lab = trained
    ckpt = out / "checkpoints" / "fast_dev_run.ckpt"
    base = [f"ckpt={ckpt}", f"crosslab=[{lab}]", f"paths.cache_dir={cache_dir}"]
    metrics = run(compose("evaluate", [*base, "bootstrap=0", f"paths.output_dir={tmp_path / 'none'}"]))
    assert "ci95" not in metrics["crosslab"]["lab_b"] and "ci95" not in metrics
    assert "95 % CI" not in (tmp_path / "none" / "report.md").read_text()
    with pytest.raises(ConfigError, match="bootstrap=-1"):
        run(compose("evaluate", [*base, "bootstrap=-1", f"paths.output_dir={tmp_path / 'neg'}"]))
    assert not (tmp_path / "neg").exists()  # refused before any prediction or file


def test_evaluate_with_several_crosslab_folders(trained, tmp_path, cache_dir):
    out, lab = trained
    ckpt = out / "checkpoints" / "fast_dev_run.ckpt"
    twin = tmp_path / "other" / "lab_b"
    shutil.copytree(lab, twin)
    cfg = compose("evaluate", [f"ckpt={ckpt}", f"crosslab=[{lab},{twin}]", f"paths.output_dir={tmp_path / 'eval'}",
                               f"paths.cache_dir={cache_dir}"])
    metrics = run(cfg)
    names = set(metrics["crosslab"])
    assert names == {f"{lab.parent.name}/lab_b", "other/lab_b"}  # same folder names: told apart by their parents
    a, b = (metrics["crosslab"][n] for n in sorted(names))
    assert a == b  # the same images give the same numbers
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report.index("cross-lab") < report.index("## Metrics")
    lo, hi = metrics["ci95"]["accuracy"]  # the evaluated split carries intervals too
    assert lo <= metrics["accuracy"] <= hi and metrics["ci95"]["balanced_accuracy"][0] <= metrics["balanced_accuracy"]
    assert f"| {metrics['accuracy']:.4f} (95 % CI {lo:.3f}–{hi:.3f}) |" in report


def test_crosslab_folders_are_evaluation_only(tmp_path):
    lab = other_lab(tmp_path / "lab")
    with pytest.raises(ConfigError, match="evaluation only"):
        check_not_training_on(lab, [lab])
    with pytest.raises(ConfigError, match="evaluation only"):
        check_not_training_on(lab / "LY", [lab])  # a sub-folder of it
    with pytest.raises(ConfigError, match="evaluation only"):
        check_not_training_on(tmp_path, [lab])  # a folder containing it
    check_not_training_on(SAMPLE, [lab])
    with pytest.raises(ConfigError, match="no such folder"):
        crosslab_folders([tmp_path / "typo"])


def test_train_refuses_a_crosslab_folder_before_training(tmp_path, cache_dir):
    lab = other_lab(tmp_path / "lab")
    cfg = compose("train", ["data=folder", f"data.root={lab}", f"crosslab=[{lab}]", f"paths.output_dir={tmp_path / 'o'}",
                            f"paths.cache_dir={cache_dir}", *FAST])
    with pytest.raises(ConfigError, match="evaluation only"):
        train(cfg)
    assert not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.skipif(not ZHENG2.is_dir(), reason=f"{ZHENG2} not present")
def test_zheng2_reads_as_a_five_class_crosslab_folder(trained, tmp_path, cache_dir):
    out, _ = trained
    cfg = compose("evaluate", [f"ckpt={out / 'checkpoints' / 'fast_dev_run.ckpt'}", f"crosslab=[{ZHENG2}]",
                               f"paths.output_dir={tmp_path}", f"paths.cache_dir={cache_dir}"])
    res = run(cfg)["crosslab"]["zheng2"]
    assert res["n"] == 100 and res["classes_present"] == ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def test_before_after_grid_tool(trained, tmp_path):
    """The tool draws two evaluations of one folder; CSVs of different folders are refused."""
    from bloodcell.tools.crosslab_grid import main as grid_main

    out, _ = trained
    csv_path = out / "eval" / "crosslab_lab_b_predictions.csv"
    flipped = tmp_path / "after.csv"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    with open(flipped, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "predicted": r["true"]} for r in rows)  # a perfect "after" model
    png = grid_main([str(csv_path), str(flipped), "--out", str(tmp_path / "g.png"), "--per-class", "2"])
    assert png.is_file() and png.stat().st_size > 10_000
    with open(tmp_path / "other.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:3])
    with pytest.raises(SystemExit):
        grid_main([str(csv_path), str(tmp_path / "other.csv"), "--out", str(tmp_path / "h.png")])
