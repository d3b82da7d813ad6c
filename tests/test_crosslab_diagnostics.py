"""scripts/crosslab_diagnostics.py and crosslab_table.py: what their numbers rest on (EM prior, zoom crop, class prior, seed means)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """A script under scripts/ as a module (they are run as files, not installed)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def diag():
    return load_script("crosslab_diagnostics")


@pytest.fixture(scope="module")
def table():
    return load_script("crosslab_table")


def test_em_recovers_a_shifted_class_prior(diag):
    """Calibrated posteriors of a source prior, on data drawn with another prior: EM estimates the new prior."""
    rng = np.random.default_rng(0)
    likelihood = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])  # p(observation | class), rows: classes
    source, target = np.array([1 / 3, 1 / 3, 1 / 3]), np.array([0.7, 0.2, 0.1])
    labels = rng.choice(3, size=20000, p=target)
    obs = (rng.random(labels.size)[:, None] > likelihood[labels].cumsum(1)).sum(1)  # one draw from each label's row
    posterior = likelihood[:, obs].T * source
    posterior /= posterior.sum(1, keepdims=True)
    adapted, estimate = diag.em_prior_adaptation(posterior, source)
    assert np.allclose(estimate, target, atol=0.03)
    assert np.allclose(adapted.sum(1), 1.0)
    assert (adapted.argmax(1) == labels).mean() > (posterior.argmax(1) == labels).mean()  # the adapted decisions are better


def test_em_keeps_the_prior_when_nothing_shifted(diag):
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])
    _, estimate = diag.em_prior_adaptation(probs, np.array([0.5, 0.5]))
    assert np.allclose(estimate, [0.5, 0.5])


def test_centre_zoom_keeps_the_centre(diag):
    img = np.zeros((300, 200, 3), np.uint8)
    img[140:160, 90:110] = 255
    out = diag.centre_zoom(img, 2.0)
    assert out.shape == (100, 100, 3)
    assert out[40:60, 40:60].min() == 255 and out[:30].max() == 0
    assert diag.centre_zoom(img, 1.0).shape == (200, 200, 3)


def test_class_prior_counts_canonical_folders(diag, tmp_path):
    for name, n in (("Lymphocytes", 3), ("neutrophil", 1)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "notes").mkdir()  # not a class: ignored
    prior = diag.class_prior(tmp_path)
    assert prior[diag.CLASS_NAMES.index("lymphocyte")] == pytest.approx(0.75)
    assert prior[diag.CLASS_NAMES.index("neutrophil")] == pytest.approx(0.25)
    assert prior.sum() == pytest.approx(1.0)


def test_source_amplitudes_take_one_seeded_image_per_class(diag):
    """The amplitude bank of the amplitude TTA: one training image per class, the same draw for the same seed."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 10)
    bank = diag.source_amplitudes(images, labels, seed=0)
    assert bank.shape == (3, 3, 8, 8)
    assert torch.equal(bank, diag.source_amplitudes(images, labels, seed=0))
    for c in range(3):  # each row is the spectrum of an image of class c
        spectra = torch.fft.fft2(torch.from_numpy(images[labels == c]).permute(0, 3, 1, 2).float() / 255).abs()
        assert any(torch.allclose(bank[c], s) for s in spectra)


def test_amplitude_probs_average_the_views(diag):
    """No bank: the model's probabilities; λ = 0: every view is the image (up to rounding); λ = 1 with a bank of one
    flat grey image: the view keeps only the mean colour, so the probabilities are those of that view."""
    class MeanColour(torch.nn.Module):  # logits from the mean colour: sensitive to what the views change
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.float().mean((2, 3)) / 255
            return torch.cat([m, -m.sum(1, keepdim=True)], 1) * 10

    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, size=(5, 8, 8, 3), dtype=np.uint8)
    net = MeanColour()
    plain = diag.amplitude_probs(net, images, None, 0.5, batch_size=2)
    expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).softmax(-1).numpy()
    assert np.allclose(plain, expected, atol=1e-6)
    bank = torch.fft.fft2(torch.rand(2, 3, 8, 8)).abs()
    assert np.allclose(diag.amplitude_probs(net, images, bank, 0.0, batch_size=2), plain, atol=1e-3)
    grey = torch.fft.fft2(torch.full((1, 3, 8, 8), 0.5)).abs()  # amplitude only at frequency 0
    flat = diag.amplitude_probs(net, images, grey, 1.0, batch_size=2)
    assert not np.allclose(flat, plain, atol=1e-3)  # λ = 1 replaced each image's spectrum: a different view
    assert np.allclose(flat, flat[0], atol=1e-6)  # every image became the same flat image up to its phase at frequency 0
    reddish, bluish = (torch.fft.fft2(torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 8, 8)).abs()
                       for rgb in ((0.8, 0.5, 0.2), (0.2, 0.5, 0.8)))  # two flat colours: two different views
    p_red, p_blue = (diag.amplitude_probs(net, images, b, 1.0) for b in (reddish, bluish))
    assert not np.allclose(p_red, p_blue, atol=1e-2)
    assert np.allclose(diag.amplitude_probs(net, images, torch.cat([reddish, bluish]), 1.0), (p_red + p_blue) / 2, atol=1e-6)


def test_crosslab_table_means_over_seeds(table):
    """scripts/crosslab_table.py: NAME and NAME_s7 are one method at two seeds; single-seed rows get no mean."""
    rows = [{"method": "randconv", "zheng2_acc": 0.58, "test_acc": 0.967}, {"method": "randconv_s7", "zheng2_acc": 0.54, "test_acc": 0.964},
            {"method": "pipeline", "zheng2_acc": 0.47, "test_acc": 0.972}]
    (mean,) = table.seed_means(rows, ["zheng2_acc", "test_acc"])
    assert mean["method"] == "randconv" and mean["seeds"] == 2
    assert mean["zheng2_acc"] == pytest.approx(0.56) and mean["zheng2_acc_half_range"] == pytest.approx(0.02)
    assert mean["test_acc"] == pytest.approx(0.9655)


def lymphocytes_right(right: int, lymphocytes: int, monocytes: int = 0) -> list[list[int]]:
    """An 8-class confusion matrix: `right` of the lymphocytes right (the rest called erythroblasts), monocytes all right."""
    cm = np.zeros((8, 8), int)
    cm[4, 4], cm[4, 2], cm[5, 5] = right, lymphocytes - right, monocytes
    return cm.tolist()


def test_crosslab_docs_tables_describe_rows_and_replace_tables_in_place(table, tmp_path):
    """`crosslab_table.py OUT --docs FILE`: rows in the documented order with their descriptions, seed means, per-class
    recall from each row's crosslab.json; the table with the same header in FILE is replaced, the text around it kept."""
    for name, recall in (("fourier", 0.5), ("pipeline", 0.25)):
        (tmp_path / f"eval_{name}").mkdir()
        folder = {"classes_present": ["lymphocyte", "monocyte"], "recall": {"lymphocyte": recall, "monocyte": 1.0}, "macro_f1": 0.6,
                  "confusion_matrix": lymphocytes_right(int(recall * 4), 4, monocytes=2)}
        (tmp_path / f"eval_{name}" / "crosslab.json").write_text(json.dumps({"folders": {"zheng2": folder}}))
    rows = [{"method": "fourier", "test_acc": 0.9741, "zheng2_acc": 0.59, "zheng2_macro_recall": 0.663, "s_per_epoch": 243.2},
            {"method": "fourier_s7", "test_acc": 0.969, "zheng2_acc": 0.57, "zheng2_macro_recall": 0.637},
            {"method": "pipeline", "test_acc": 0.972, "zheng2_acc": 0.47, "zheng2_macro_recall": 0.585, "s_per_epoch": 471.0}]
    means = table.seed_means(rows, ["test_acc", "zheng2_acc", "zheng2_macro_recall"])
    rounded, seeds, per_class = table.docs_tables(tmp_path, rows, means)
    assert [line.split(" | ")[0] for line in rounded[2:]] == ["| pipeline", "| fourier", "| fourier_s7"]  # ROWS order
    assert rounded[2].startswith("| pipeline | baseline: `augment=pipeline` | 0.972 |") and rounded[2].endswith("| 471* |")
    assert "| fourier | 42, 7 | 0.972 ± 0.003 |" in seeds[2]
    assert per_class[0] == "| row | lymphocyte | monocyte | macro F1 | accuracy 95 % CI | macro recall 95 % CI |"
    ci = table.intervals({"confusion_matrix": lymphocytes_right(1, 4, monocytes=2)})  # 3 of 6 right
    assert per_class[2] == "| pipeline | 0.25 | 1.00 | 0.600 | {:.2f}–{:.2f} | {:.2f}–{:.2f} |".format(*ci["accuracy"], *ci["macro_recall"])
    assert ci["accuracy"][0] < 0.5 < ci["accuracy"][1]
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n\n{per_class[0]}\n|---|\n| old | 0 |\n\nafter\n")
    assert table.replace_tables(doc, [rounded, per_class]) == 1
    assert doc.read_text() == "intro\n\n" + "\n".join(per_class) + "\n\nafter\n"


def test_crosslab_table_keeps_earlier_rows_and_a_remeasured_row_wins(table, tmp_path):
    """`--previous results.json`: rows OUT lacks come from the earlier table (their per-class recall from the committed
    crosslab_<row>.json beside it); a row OUT measured again replaces its earlier figures and per-class recall."""
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    earlier = [{"method": "pipeline", "test_acc": 0.972, "zheng2_acc": 0.47, "zheng2_macro_recall": 0.585},
               {"method": "fourier", "test_acc": 0.974, "zheng2_acc": 0.59, "zheng2_macro_recall": 0.663}]
    (docs / "results.json").write_text(json.dumps({"rows": earlier, "seed_means": []}))
    for where, recall in ((docs / "crosslab_pipeline.json", 0.25), (docs / "crosslab_fourier.json", 0.1),
                          (out / "eval_fourier" / "crosslab.json", 0.5)):
        where.parent.mkdir(parents=True, exist_ok=True)
        folder = {"classes_present": ["lymphocyte"], "recall": {"lymphocyte": recall}, "macro_f1": 0.6,
                  "confusion_matrix": lymphocytes_right(int(recall * 20), 20)}
        where.write_text(json.dumps({"folders": {"zheng2": folder}}))
    remeasured = [{"method": "fourier", "test_acc": 0.97, "zheng2_acc": 0.61, "zheng2_macro_recall": 0.7}]
    rows = table.with_previous(remeasured, docs / "results.json")
    assert [(r["method"], r["zheng2_acc"]) for r in rows] == [("pipeline", 0.47), ("fourier", 0.61)]
    *_, per_class = table.docs_tables(out, rows, [], docs)
    assert [line.rsplit(" | ", 2)[0] for line in per_class[2:]] == ["| pipeline | 0.25 | 0.600", "| fourier | 0.50 | 0.600"]
    with pytest.raises(SystemExit, match="no such results.json"):
        table.main(out, previous=docs / "missing.json")


def test_logit_adjustment_divides_out_the_training_prior(diag):
    """tau = 1 turns a prior-weighted posterior back into the likelihood's decision; a uniform prior changes nothing."""
    likelihood = np.array([[0.5, 0.5], [0.6, 0.4]])  # p(x | class) for two images, classes 0 and 1
    prior = np.array([0.9, 0.1])
    posterior = likelihood * prior
    posterior /= posterior.sum(1, keepdims=True)
    assert (posterior.argmax(1) == 0).all()  # the frequent class wins both
    adjusted = diag.logit_adjust(posterior, prior)
    assert np.allclose(adjusted, likelihood / likelihood.sum(1, keepdims=True))
    assert np.allclose(diag.logit_adjust(posterior, np.array([0.5, 0.5])), posterior)
    assert np.allclose(diag.logit_adjust(posterior, prior, tau=0.0), posterior)


def test_table_intervals_from_a_confusion_matrix_equal_a_fresh_evaluation(table):
    """Rows scored before intervals existed get the same interval a new evaluation writes (same bootstrap, seed 0)."""
    from bloodcell.evaluation.crosslab import crosslab_metrics

    probs = np.eye(8)[[0, 0, 1, 1, 1, 4, 4, 2]]
    labels = np.array([0, 1, 1, 1, 1, 4, 4, 4])
    fresh = crosslab_metrics(probs, labels, [str(i) for i in range(8)], bootstrap=2000)
    old = {k: v for k, v in fresh.items() if k != "ci95"}
    assert table.intervals(old) == fresh["ci95"] and table.intervals(fresh) is fresh["ci95"]
