"""How much a 100-image folder can say: bootstrap intervals, the paired comparison and McNemar's test (issue 12)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bloodcell.errors import ConfigError
from bloodcell.evaluation.crosslab import compare_predictions, crosslab_metrics
from bloodcell.evaluation.metrics import bootstrap_intervals, check_bootstrap, mcnemar_exact_p, paired_comparison

CLASSES = ["a", "b", "c"]


def confusion(right: list[int], support: list[int]) -> np.ndarray:
    """A 3-class confusion matrix with `right[k]` of `support[k]` correct; the errors go to the next class."""
    cm = np.zeros((3, 3), int)
    for k, (r, n) in enumerate(zip(right, support)):
        cm[k, k], cm[k, (k + 1) % 3] = r, n - r
    return cm


def test_intervals_hold_the_estimate_and_shrink_with_more_images():
    small = bootstrap_intervals(confusion([6, 3, 8], [10, 5, 10]), 4000)
    big = bootstrap_intervals(confusion([60, 30, 80], [100, 50, 100]), 4000)
    acc, macro = 17 / 25, np.mean([0.6, 0.6, 0.8])
    assert small["accuracy"][0] < acc < small["accuracy"][1]
    assert small["macro_recall"][0] < macro < small["macro_recall"][1]
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(big["accuracy"]) < 0.5 * width(small["accuracy"])  # ~1/sqrt(10) as wide
    assert bootstrap_intervals(confusion([10, 5, 10], [10, 5, 10]), 500)["accuracy"] == [1.0, 1.0]  # all right: no width
    assert bootstrap_intervals(confusion([6, 3, 8], [10, 5, 10]), 500) == bootstrap_intervals(confusion([6, 3, 8], [10, 5, 10]), 500)


def test_intervals_match_resampling_the_images_themselves():
    """Binomial draws per class are the stratified bootstrap of the images: same interval as resampling indices."""
    right = np.array([1] * 14 + [0] * 6 + [1] * 3 + [0] * 7)  # class 0: 14/20, class 1: 3/10
    labels = np.array([0] * 20 + [1] * 10)
    rng = np.random.default_rng(1)
    acc, macro = [], []
    for _ in range(20000):
        rec = [right[rng.choice(np.flatnonzero(labels == c), size=(labels == c).sum())].mean() for c in (0, 1)]
        acc.append((rec[0] * 20 + rec[1] * 10) / 30)
        macro.append(np.mean(rec))
    cm = np.array([[14, 6], [7, 3]])
    ci = bootstrap_intervals(cm, 20000, seed=3)
    assert np.allclose(ci["accuracy"], np.quantile(acc, [0.025, 0.975]), atol=0.034)  # one image of 30
    assert np.allclose(ci["macro_recall"], np.quantile(macro, [0.025, 0.975]), atol=0.034)


def test_intervals_refuse_nonsense():
    cm = confusion([6, 3, 8], [10, 5, 10])
    with pytest.raises(ValueError, match="resample"):
        bootstrap_intervals(cm, 0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(cm, 100, level=1.0)
    with pytest.raises(ValueError, match="labelled"):
        bootstrap_intervals(np.zeros((3, 3), int), 100)


def test_mcnemar_exact_against_hand_computed_binomials():
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 2**10)
    assert mcnemar_exact_p(3, 5) == pytest.approx(2 * (1 + 8 + 28 + 56) / 256)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(2, 9) == mcnemar_exact_p(9, 2)


def test_paired_comparison_of_a_model_with_itself_and_a_better_one():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [40, 40, 20])
    a = np.where(rng.random(100) < 0.6, labels, (labels + 1) % 3)
    same = paired_comparison(labels, a, a, 1000)
    assert same["accuracy"]["difference"] == 0 and same["accuracy"]["interval"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    b = a.copy()
    wrong = np.flatnonzero(a != labels)
    b[wrong[:20]] = labels[wrong[:20]]  # B fixes 20 of A's errors and breaks nothing
    better = paired_comparison(labels, a, b, 2000)
    assert better["accuracy"]["difference"] == pytest.approx(0.20)
    assert better["accuracy"]["interval"][0] > 0 and better["mcnemar_p"] < 1e-4
    assert better["a_only_right"] == 0 and better["b_only_right"] == 20
    rec = lambda p: np.mean([(p[labels == c] == c).mean() for c in range(3)])  # noqa: E731
    assert better["macro_recall"]["difference"] == pytest.approx(rec(b) - rec(a))
    worse = paired_comparison(labels, b, a, 2000)  # the other way round: the mirror image
    assert worse["accuracy"]["interval"][1] < 0 and worse["mcnemar_p"] == better["mcnemar_p"]
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison(labels, a[:50], b, 100)


def test_crosslab_metrics_carry_intervals_only_when_asked():
    probs = np.eye(8)[[0, 0, 1, 1, 1, 4]]
    labels = np.array([0, 1, 1, 1, 1, 4])
    classes = [str(i) for i in range(8)]
    assert "ci95" not in crosslab_metrics(probs, labels, classes)
    res = crosslab_metrics(probs, labels, classes, bootstrap=500)
    assert res["ci95"]["resamples"] == 500 and res["ci95"]["accuracy"][0] <= res["accuracy"] <= res["ci95"]["accuracy"][1]
    with pytest.raises(ConfigError, match="bootstrap=-1"):
        crosslab_metrics(probs, labels, classes, bootstrap=-1)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "true", "predicted", "p_x"])
        w.writerows([*r, "1.0"] for r in rows)
    return path


def test_compare_tool_pairs_two_evaluations_of_one_folder(tmp_path, capsys):
    from bloodcell.tools.crosslab_compare import main

    truth = ["lymphocyte"] * 30 + ["neutrophil"] * 20
    ids = [f"/lab/{t}/img{i}.jpg" for i, t in enumerate(truth)]
    a = write_csv(tmp_path / "a.csv", [(i, t, t if k % 2 else "monocyte") for k, (i, t) in enumerate(zip(ids, truth))])
    moved = [i.replace("/lab/", "/elsewhere/lab/") for i in ids]  # the same folder evaluated under another path
    b = write_csv(tmp_path / "b.csv", [(i, t, t) for i, t in zip(moved, truth)])
    (result,) = main([str(a), str(b), "--names", "old", "new", "--resamples", "500", "--json", str(tmp_path / "c.json")])["comparisons"]
    assert result["accuracy"]["difference"] == pytest.approx(0.5) and result["b_only_right"] == 25
    assert "difference +0.500" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["comparisons"][0]["names"] == ["old", "new"]
    several = main([str(a), str(b), str(a), "--resamples", "200"])["comparisons"]  # several models: one table
    assert [r["names"] for r in several] == [["A", "B"], ["A", "C"]] and several[1]["accuracy"]["interval"] == [0.0, 0.0]
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| B (vs A) |") and table[3].startswith("| C | +0.000 (+0.000 to +0.000) |")
    with pytest.raises(SystemExit):
        main([str(a), str(b), "--names", "only_one"])
    other = write_csv(tmp_path / "other.csv", [(i, t, t) for i, t in zip(ids[:10], truth[:10])])
    with pytest.raises(ConfigError, match="different images"):
        compare_predictions(a, other, 100)
    relabelled = write_csv(tmp_path / "relabelled.csv", [(i, "monocyte", t) for i, t in zip(ids, truth)])
    with pytest.raises(ConfigError, match="true labels"):
        compare_predictions(a, relabelled, 100)
    with pytest.raises(ConfigError, match="no such predictions CSV"):
        compare_predictions(a, tmp_path / "missing.csv", 100)
    with pytest.raises(SystemExit) as exit_info:  # one line on stderr, exit 2, no traceback
        main([str(a), str(tmp_path / "missing.csv")])
    assert exit_info.value.code == 2 and "no such predictions CSV" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [-1, 1, 99, 2000.0, "many", True, None])
def test_bootstrap_setting_must_be_zero_or_enough_resamples(bad):
    with pytest.raises(ConfigError, match=f"bootstrap={bad!r}: give a whole number of resamples, at least 100"):
        check_bootstrap(bad)


def test_bootstrap_setting_accepts_off_and_enough():
    assert check_bootstrap(0) == 0 and check_bootstrap(100) == 100 and check_bootstrap(2000) == 2000
