"""Evaluation metrics against hand-computed values: P/R/F1, ensemble averaging, ECE, temperature scaling, TTA views."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bloodcell.evaluation.inference import tta_views
from bloodcell.evaluation.metrics import (
    apply_temperature,
    average_probs,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def test_per_class_metrics_by_hand():
    # true 0,0,0,1,1,1 ; predicted 0,0,1,1,1,1 → cm [[2,1],[0,3]]
    probs = np.eye(2)[[0, 0, 1, 1, 1, 1]]
    m = classification_metrics(probs, np.array([0, 0, 0, 1, 1, 1]), ["a", "b"])
    assert m["confusion_matrix"] == [[2, 1], [0, 3]]
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.75, "recall": 1.0, "f1": 2 * 0.75 / 1.75, "support": 3})
    assert m["macro_f1"] == pytest.approx((0.8 + 1.5 / 1.75) / 2)


def test_ensemble_average_changes_the_decision():
    a = np.array([[0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.3, 0.7]])
    c = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(average_probs([a, b, c]), [[0.4, 0.6], [1.4 / 3, 1.6 / 3]])
    # weights 3:1:0 → 0.75 a + 0.25 b
    np.testing.assert_allclose(average_probs([a, b, c], [3, 1, 0]), [[0.475, 0.525], [0.225, 0.775]])
    labels = np.array([0, 0])
    assert classification_metrics(a, labels, ["x", "y"])["accuracy"] == 0.5  # a alone: second row → y
    # 0.25 a + 0.75 c: first 0.525 vs 0.475 → x; second 0.725 vs 0.275 → x
    assert classification_metrics(average_probs([a, c], [1, 3]), labels, ["x", "y"])["accuracy"] == 1.0


def test_ece_on_a_crafted_case():
    # 5 samples at confidence 0.6, all right (gap 0.4); 5 at 0.95, 3 right (gap 0.35) → ECE = 0.5·0.4 + 0.5·0.35
    probs = np.array([[0.6, 0.4]] * 5 + [[0.95, 0.05]] * 5)
    labels = np.array([0] * 5 + [0, 0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.375)
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins["count"][5] == 5 and bins["count"][9] == 5 and sum(bins["count"]) == 10
    assert bins["accuracy"][9] == pytest.approx(0.6) and bins["confidence"][5] == pytest.approx(0.6)
    # perfectly calibrated one-bin case and a top-confidence 1.0 landing in the last bin
    assert expected_calibration_error(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0, 1]), 10) == pytest.approx(0.0)
    assert reliability_bins(np.array([[1.0, 0.0]]), np.array([0]), 4)["count"] == [0, 0, 0, 1]


def test_temperature_scaling_fixes_an_overconfident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 4))
    p_true = torch.softmax(torch.tensor(logits), 1).numpy()
    labels = np.array([rng.choice(4, p=p) for p in p_true])  # labels drawn from the model: calibrated at T=1
    overconfident = torch.softmax(torch.tensor(logits * 3.0), 1).numpy()
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    fixed = apply_temperature(overconfident, t)
    assert negative_log_likelihood(fixed, labels) < negative_log_likelihood(overconfident, labels) - 0.1
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(overconfident, labels) / 2
    np.testing.assert_allclose(apply_temperature(overconfident, 1.0), overconfident, atol=1e-9)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()  # accuracy unchanged


def test_tta_views_are_the_dihedral_group():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    for mode, n in (("none", 1), ("flips", 3), ("d4", 8)):
        views = {tuple(v(x).flatten().tolist()) for v in tta_views(mode)}
        assert len(views) == n
    assert tuple(x.flatten().tolist()) in {tuple(v(x).flatten().tolist()) for v in tta_views("d4")}
