"""Prediction on a folder tree of mixed images with one checkpoint or an ensemble → CSV + errors CSV."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcell.checkpoint import load_module
from bloodcell.config import compose
from bloodcell.data.images import read_image, resize_image
from bloodcell.errors import CheckpointError, ConfigError, DataError
from bloodcell.evaluation.predict import predict_folder
from bloodcell.training import train
from tests.conftest import FAST, ROOT, SAMPLE

RUN = {"device": "cpu", "batch_size": 64}  # predict_folder has no defaults for these (evaluate.py passes conf/evaluate.yaml's)


def make_checkpoint(out: Path, cache: Path, image_size: int) -> str:
    """A real (1-batch fast_dev_run) small-CNN checkpoint trained on the sample at `image_size`."""
    overrides = ["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "test=false", "evaluate=false", "~logger.tensorboard",
                 f"data.image_size={image_size}", f"paths.output_dir={out}", f"paths.cache_dir={cache}", *FAST]
    train(compose("train", overrides))
    return str(out / "checkpoints" / "fast_dev_run.ckpt")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, cache_dir) -> list[str]:
    base = tmp_path_factory.mktemp("ckpts")
    return [make_checkpoint(base / "s32", cache_dir, 32), make_checkpoint(base / "s48", cache_dir, 48)]


def sample_images(n: int) -> list[Path]:
    return sorted(SAMPLE.rglob("*.jpg"))[:: max(1, 240 // n)][:n]


def mixed_tree(root: Path) -> tuple[set[str], set[str]]:
    """A scanner-like tree: nested folders, JPEG/PNG/BMP/TIFF, gray, RGBA, 16-bit, odd sizes + bad files."""
    srcs = sample_images(6)
    good, bad = [], []
    (root / "slide1" / "deep").mkdir(parents=True)
    (root / "slide2").mkdir()
    img = Image.open(srcs[0])
    shutil.copy(srcs[1], root / "slide1" / "a.jpg"); good.append(root / "slide1" / "a.jpg")
    img.convert("L").resize((71, 53)).save(root / "slide1" / "gray.png"); good.append(root / "slide1" / "gray.png")
    img.convert("RGBA").resize((200, 120)).save(root / "slide1" / "deep" / "rgba.png"); good.append(root / "slide1" / "deep" / "rgba.png")
    Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(root / "slide2" / "deep16.tif")
    good.append(root / "slide2" / "deep16.tif")
    Image.open(srcs[2]).save(root / "slide2" / "c.bmp")
    good.append(root / "slide2" / "c.bmp")
    Image.open(srcs[3]).save(root / "slide2" / "d.JPEG", quality=70)
    good.append(root / "slide2" / "d.JPEG")
    (root / "slide2" / "empty.jpg").write_bytes(b"")
    bad.append(root / "slide2" / "empty.jpg")
    (root / "slide2" / "cut.jpg").write_bytes(srcs[4].read_bytes()[:600])
    bad.append(root / "slide2" / "cut.jpg")
    (root / "slide1" / "notes.txt").write_text("scanner log")
    bad.append(root / "slide1" / "notes.txt")
    (root / "slide1" / "fake.png").write_text("not a png")
    bad.append(root / "slide1" / "fake.png")
    (root / ".hidden.jpg").write_bytes(b"ignored")
    return {str(p) for p in good}, {str(p) for p in bad}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_mixed_tree_with_ensemble(checkpoints, tmp_path):
    root = tmp_path / "scans"
    good, bad = mixed_tree(root)
    out = tmp_path / "pred" / "predictions.csv"
    summary = predict_folder(checkpoints, root, out, device="cpu", batch_size=4)
    rows, errors = read_csv(out), read_csv(tmp_path / "pred" / "predictions_errors.csv")
    assert {r["path"] for r in rows} == good and {r["path"] for r in errors} == bad
    assert (summary.files, summary.predicted, summary.errors) == (10, 6, 4)
    classes = set(load_module(checkpoints[0]).classes)
    for r in rows:
        probs = [float(r["probability"]), float(r["second_probability"]), float(r["third_probability"])]
        assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] and probs[0] <= 1
        assert {r["predicted_class"], r["second_class"], r["third_class"]} <= classes
    reasons = {Path(r["path"]).name: r["error"] for r in errors}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert "truncated" in reasons["cut.jpg"]
    assert reasons["notes.txt"].startswith("not an image file (suffix '.txt'")
    assert "cannot identify image file" in reasons["fake.png"]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["errors"] == 4 and sum(saved["class_counts"].values()) == 6


def test_ensemble_is_mean_of_members_each_at_its_own_size(checkpoints, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for p in sample_images(5):
        shutil.copy(p, root / p.name)
    single = [read_csv(predict_folder([c], root, tmp_path / f"m{i}.csv", **RUN).predictions_csv) for i, c in enumerate(checkpoints)]
    both = read_csv(predict_folder(checkpoints, root, tmp_path / "both.csv", **RUN).predictions_csv)
    # reference: decode once, resize per model, average softmax
    modules = [load_module(c) for c in checkpoints]
    for row, p in zip(both, sorted(root.iterdir())):
        img = read_image(p)
        with torch.inference_mode():
            probs = [
                m(torch.from_numpy(resize_image(img, m.hparams.image_size)).permute(2, 0, 1)[None]).softmax(-1)[0].numpy() for m in modules
            ]
        mean = np.mean(probs, axis=0)
        assert row["path"] == str(p) and row["predicted_class"] == modules[0].classes[int(mean.argmax())]
        assert float(row["probability"]) == pytest.approx(float(mean.max()), abs=1e-5)
    assert [r["path"] for r in single[0]] == [r["path"] for r in both]


def test_predict_never_overwrites_unless_asked(checkpoints, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    shutil.copy(sample_images(1)[0], root / "x.jpg")
    out = tmp_path / "predictions.csv"
    out.write_text("precious")
    with pytest.raises(ConfigError, match="refusing to overwrite.*overwrite=true"):
        predict_folder(checkpoints[:1], root, out, **RUN)
    assert out.read_text() == "precious"
    assert predict_folder(checkpoints[:1], root, out, overwrite=True, **RUN).predicted == 1


def test_predict_input_errors(checkpoints, tmp_path):
    with pytest.raises(DataError, match="predict_dir=.*does not exist"):
        predict_folder(checkpoints, tmp_path / "nope", tmp_path / "p.csv", **RUN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no files"):
        predict_folder(checkpoints, tmp_path / "empty", tmp_path / "p.csv", **RUN)
    # an ensemble member trained on another class order
    ckpt = torch.load(checkpoints[0], weights_only=True)
    ckpt["hyper_parameters"]["classes"] = list(reversed(ckpt["hyper_parameters"]["classes"]))
    torch.save(ckpt, tmp_path / "other_classes.ckpt")
    shutil.copy(sample_images(1)[0], tmp_path / "empty" / "x.jpg")
    with pytest.raises(CheckpointError, match="same class set"):
        predict_folder([checkpoints[0], str(tmp_path / "other_classes.ckpt")], tmp_path / "empty", tmp_path / "p.csv", **RUN)


def test_evaluate_cli_predict_dir_with_ensemble(checkpoints, tmp_path):
    """The user-facing command: python evaluate.py ckpt=[a,b] predict_dir=DIR."""
    root = tmp_path / "scans"
    good, bad = mixed_tree(root)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "evaluate.py",
        f"ckpt=[{checkpoints[0]},{checkpoints[1]}]",
        f"predict_dir={root}",
        f"hydra.run.dir={run_dir}",
        "device=cpu",
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(read_csv(run_dir / "predictions.csv")) == len(good)
    assert len(read_csv(run_dir / "predictions_errors.csv")) == len(bad)
    assert "Traceback" not in res.stderr
