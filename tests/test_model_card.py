"""model_card.md: every train.py run writes one beside its checkpoints, from the run's own config, data and numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from bloodcell.checkpoint import load_module
from bloodcell.config import compose
from bloodcell.evaluation.inference import datamodule_for
from bloodcell.evaluation.model_card import model_card
from tests.test_predict import make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cache_dir) -> str:
    return make_checkpoint(tmp_path_factory.mktemp("card") / "run", cache_dir, 32)


def test_train_writes_a_model_card(ckpt):
    card = (Path(ckpt).parent / "model_card.md").read_text()
    for section in ("## Model", "## Data", "## Preprocessing", "## Augmentation", "## Training budget", "## Results",
                    "## Intended use and limits"):
        assert section in card
    assert "bloodcell_small_cnn" in card and "random initialisation" in card and "data/sample" in card
    assert "| basophil | 22 | 4 | 4 |" in card and "| **total** | 176 | 32 | 32 |" in card  # counts per class and split
    assert "HorizontalFlip" in card and "fast_dev_run" in card and "32×32" in card
    assert "Cross-lab accuracy: not evaluated" in card and "Bmk and corruption accuracy: not evaluated" in card
    assert ckpt.endswith("fast_dev_run.ckpt") and "fast_dev_run.ckpt" in card


def test_card_renders_robustness_crosslab_and_heatmaps(ckpt, tmp_path):
    module = load_module(ckpt)
    dm, _ = datamodule_for(module, None, {})
    cfg = compose("train", ["data=sample", "model=small_cnn", f"paths.output_dir={tmp_path}"])
    summary = {"best_checkpoint": ckpt, "epochs": 3, "metrics": {"val/acc": 0.9, "test/acc": 0.875, "test/bal_acc": 0.86, "test/f1": 0.85},
               "crosslab": {"zheng2": {"n": 100, "classes_present": ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"],
                                       "accuracy": 0.41, "macro_recall": 0.38, "macro_f1": 0.33, "confusion_matrix": [],
                                       "ci95": {"accuracy": [0.32, 0.5], "macro_recall": [0.3, 0.46]}}}}
    evaluation = {"split": "test", "accuracy": 0.875, "balanced_accuracy": 0.86, "macro_f1": 0.85, "ece": 0.04, "nll": 0.4,
                  "robustness": {"bmk_acc": 0.71, "mean_corruption_acc": 0.66},
                  "explain": {"sets": {"test": {"cam_cell_share": 0.5, "cell_area_share": 0.3}}}}
    card = model_card(cfg, dm, module, summary, evaluation)
    assert ("| cross-lab `zheng2` (n=100, 5 classes; recall = macro recall) | 0.410 (95 % CI 0.32–0.50) | "
            "0.380 (95 % CI 0.30–0.46) | 0.330 |") in card
    assert "Bmk accuracy 0.710, mean accuracy over the corruption suite 0.660" in card
    assert "| test split (Lightning) | 0.875 | 0.860 | 0.850 |" in card and "ECE 0.040" in card
    assert "test 0.500 (cell area 0.300)" in card and "not evaluated" not in card
