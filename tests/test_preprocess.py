"""Preprocessing that travels with the model: nucleus finding, magnification and colour normalisation,
and the checkpoint round trip (training cache, evaluation on another folder and folder prediction feed the
network the same pixels)."""
from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bloodcell.checkpoint import load_module
from bloodcell.config import compose
from bloodcell.data.images import read_image
from bloodcell.data.preprocess import Preprocess, find_nucleus, optical_density, reinhard, white_balance
from bloodcell.errors import ConfigError
from bloodcell.evaluation.inference import InferenceSettings, datamodule_for, ensemble_predict, load_members
from bloodcell.evaluation.predict import predict_folder
from bloodcell.training import train
from tests.conftest import FAST, SAMPLE

BACKGROUND = (245, 228, 205)


def smear(size: int = 300, radius: float = 30.0, centre: tuple[int, int] = (150, 150), rbc: bool = True) -> np.ndarray:
    """A synthetic smear: cream background, pink red cells, a purple nucleus disc of `radius` at `centre` (x, y)."""
    img = np.full((size, size, 3), BACKGROUND, np.uint8)
    if rbc:
        for x, y in [(40, 40), (260, 50), (50, 250), (250, 260), (150, 40)]:
            cv2.circle(img, (x * size // 300, y * size // 300), size // 14, (225, 160, 170), -1, cv2.LINE_AA)
    cv2.circle(img, centre, int(radius * 1.6), (200, 185, 220), -1, cv2.LINE_AA)  # cytoplasm
    cv2.circle(img, centre, int(radius), (80, 40, 120), -1, cv2.LINE_AA)  # nucleus
    return img


def make_preprocess(**changes) -> Preprocess:
    """conf/data/_common.yaml's preprocessing at 96 px with `changes`."""
    return replace(Preprocess.resize_only(96), **changes)


def test_find_nucleus_locates_the_dark_disc():
    box = find_nucleus(smear(300, 30, (170, 140)))
    assert box is not None
    assert abs(box.cx - 170) <= 2 and abs(box.cy - 140) <= 2 and abs(box.extent - 61) <= 4
    assert find_nucleus(np.full((64, 64, 3), 230, np.uint8)) is None  # nothing stained


def test_cell_scale_normalises_magnification_and_centres_the_cell():
    """The same cell imaged at two magnifications and off-centre comes out the same size, centred."""
    prep = make_preprocess(scale="cell", cell_fraction=0.45, zoom_range=(0.5, 3.0))
    outs = [prep(smear(300, r, c)) for r, c in ((22, (150, 150)), (34, (120, 170)))]
    for out in outs:
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8
        box = find_nucleus(out)
        assert abs(box.extent / 96 - 0.45) < 0.05 and abs(box.cx - 48) <= 3 and abs(box.cy - 48) <= 3
    plain = make_preprocess()
    sizes = [find_nucleus(plain(smear(300, r))).extent for r in (22, 34)]
    assert sizes[1] / sizes[0] > 1.4  # without normalisation the magnification difference stays


def test_cell_scale_respects_zoom_limits_and_falls_back_without_a_nucleus():
    prep = make_preprocess(scale="cell", cell_fraction=0.45, zoom_range=(0.8, 1.25))
    tiny = find_nucleus(prep(smear(300, 8))).extent / 96  # needs ~2.8x zoom, capped at 1.25x
    assert tiny == pytest.approx(17 * 1.25 / 300, abs=0.02)
    blank = np.full((120, 100, 3), 230, np.uint8)
    assert np.array_equal(prep(blank), Preprocess.resize_only(96)(blank))


def test_preprocess_is_deterministic_and_validated():
    img = smear(200, 25, (90, 110))
    for colour in ("none", "white_balance", "reinhard", "macenko"):
        prep = make_preprocess(scale="cell", colour=colour, context="suppress")
        assert np.array_equal(prep(img), prep(img.copy())), colour
    with pytest.raises(ConfigError, match="preprocess.scale"):
        make_preprocess(scale="zoom")
    with pytest.raises(ConfigError, match="preprocess.colour"):
        make_preprocess(colour="vahadane")
    with pytest.raises(ConfigError, match="zoom_range"):
        make_preprocess(zoom_range=(1.2, 2.0))
    with pytest.raises(ConfigError, match="preprocess.context"):
        make_preprocess(context="crop")


def test_context_suppression_keeps_the_cell_and_fades_the_field():
    img = smear(300, 30, (150, 150))
    prep = make_preprocess(context="suppress", context_diameter=1.8)
    out = prep(img).astype(int)
    plain = make_preprocess()(img).astype(int)
    centre = np.s_[41:55, 41:55]
    assert np.array_equal(out[centre], plain[centre])  # the nucleus untouched
    corners = np.concatenate([out[:12, :12].reshape(-1, 3), out[-12:, -12:].reshape(-1, 3)])
    assert np.abs(corners - np.array(BACKGROUND)).max() <= 2  # red cells in the corners faded to background
    assert np.abs(plain[:12, :12].reshape(-1, 3) - np.array(BACKGROUND)).max() > 20  # they were there before
    cell = make_preprocess(scale="cell", context="suppress")(smear(300, 20, (120, 170)))
    assert abs(find_nucleus(cell).cx - 48) <= 3  # combines with the magnification normaliser


def test_reencode_is_lossy_deterministic_validated_and_keyed():
    img = smear(96, 20, (48, 48))
    plain = make_preprocess()
    for fmt in ("webp", "jpeg"):
        prep = make_preprocess(reencode=fmt, reencode_quality=85)
        out = prep(img)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, prep(img))  # no randomness: the same pixels in training, evaluation and prediction
        assert 0 < np.abs(out.astype(int) - plain(img).astype(int)).mean() < 8  # lossy, but the same image
        assert prep.describe()["reencode"] == fmt  # a cache or checkpoint built with it is keyed by it
    coarse = np.abs(make_preprocess(reencode="jpeg", reencode_quality=10)(img).astype(int) - img).mean()
    assert coarse > np.abs(make_preprocess(reencode="jpeg", reencode_quality=95)(img).astype(int) - img).mean()
    assert "reencode" not in plain.describe()  # off: caches and checkpoints from before the option keep their keys
    for prep in (plain, make_preprocess(reencode="webp", reencode_quality=70, scale="cell")):
        assert Preprocess.from_description(prep.describe()) == prep  # export metadata → the same preprocessing
    with pytest.raises(ConfigError, match="preprocess.reencode"):
        make_preprocess(reencode="png")
    with pytest.raises(ConfigError, match="reencode_quality"):
        make_preprocess(reencode="webp", reencode_quality=0)


def test_downsample_filter_aliases_less_than_box_validated_and_keyed():
    """`data.preprocess.downsample=bicubic` changes only how images are shrunk: same size/dtype, no randomness, a
    different cache key; at `box` (the default) the description is the one every existing cache and checkpoint has."""
    img = smear(128, 12, (64, 64))  # pbc128's size → 96 px: a non-integer factor, where the two filters differ most
    box, bicubic = make_preprocess(), make_preprocess(downsample="bicubic")
    out = bicubic(img)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8 and np.array_equal(out, bicubic(img))
    assert not np.array_equal(out, box(img))
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    fine = [(np.diff(p(noise).astype(float), axis=1) ** 2).mean() for p in (box, bicubic)]
    assert fine[1] < 0.7 * fine[0]  # the wider cubic kernel lets through less of what 96 px cannot hold (aliasing)
    cell = smear(300, 30, (150, 150))  # the magnification normaliser's zoomed crop is shrunk with the same filter
    assert not np.array_equal(make_preprocess(scale="cell", downsample="bicubic")(cell), make_preprocess(scale="cell")(cell))
    same_size = smear(96, 20, (48, 48))
    assert np.array_equal(bicubic(same_size), box(same_size))  # nothing to shrink: the filter is never used
    assert "downsample" not in box.describe() and bicubic.describe()["downsample"] == "bicubic"
    for prep in (box, bicubic, make_preprocess(downsample="bicubic", scale="cell")):
        assert Preprocess.from_description(prep.describe()) == prep
    with pytest.raises(ConfigError, match="preprocess.downsample"):
        make_preprocess(downsample="nearest")


def test_checkpoint_data_config_from_before_an_option_gets_its_default():
    """A stored data config without `preprocess.reencode` (older checkpoints) loads with re-encoding off."""
    from bloodcell.data.datamodule import with_data_defaults

    old = {"resize_mode": "center_crop", "preprocess": {"scale": "cell", "cell_fraction": 0.4, "zoom_range": [0.6, 2.0],
                                                         "context": "keep", "context_diameter": 1.8, "colour": "none",
                                                         "background": [250, 230, 205], "lab_reference": [0, 0, 0, 1, 1, 1]}}
    merged = with_data_defaults(old)
    prep = Preprocess.from_data_cfg(96, merged["resize_mode"], merged["preprocess"])
    assert (prep.scale, prep.cell_fraction, prep.reencode, prep.downsample) == ("cell", 0.4, "none", "box")


def test_white_balance_maps_the_background_to_the_reference():
    tinted = np.clip(smear(160, 20, (80, 80)).astype(np.float32) * np.array([0.85, 1.0, 1.1]), 0, 255).astype(np.uint8)
    out = white_balance(tinted, (250, 230, 205))
    od = optical_density(out)
    bg = np.median(out[od <= np.percentile(od, 10)], axis=0)
    assert np.abs(bg - np.array([250, 230, 205])).max() <= 2
    nucleus = out[70:90, 70:90].mean(axis=(0, 1))
    assert nucleus[2] > nucleus[0]  # still purple: a per-channel gain, not a flattening


def test_reinhard_maps_lab_statistics_to_the_reference():
    from torchstain.numpy.utils.rgb2lab import rgb2lab
    from torchstain.numpy.utils.split import lab_split

    ref = (65.0, 20.0, -5.0, 20.0, 10.0, 15.0)
    out = reinhard(smear(128), ref)
    lab = lab_split(rgb2lab(out.astype(np.float32) / 255))
    assert [round(float(c.mean())) for c in lab] == pytest.approx(ref[:3], abs=3)


@pytest.fixture(scope="module")
def normalised_checkpoint(tmp_path_factory, cache_dir) -> str:
    """A fast_dev_run small CNN trained with cell scale, white balance, context suppression and WebP re-encoding."""
    out = tmp_path_factory.mktemp("prep")
    overrides = ["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "test=false", "evaluate=false", "~logger.tensorboard",
                 "data.image_size=48", "data.preprocess.scale=cell", "data.preprocess.colour=white_balance",
                 "data.preprocess.context=suppress", "data.preprocess.reencode=webp", "data.preprocess.reencode_quality=70",
                 "data.preprocess.downsample=bicubic",
                 f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", *FAST]
    train(compose("train", overrides))
    return str(out / "checkpoints" / "fast_dev_run.ckpt")


def test_checkpoint_round_trip_feeds_the_same_pixels_everywhere(normalised_checkpoint, tmp_path, cache_dir):
    """Training cache, evaluation on another folder (whose config says otherwise) and folder prediction all
    apply the checkpoint's own preprocessing, so the network sees identical pixels and gives identical answers."""
    module = load_module(normalised_checkpoint)
    prep = module.preprocessing
    assert (prep.image_size, prep.scale, prep.colour, prep.context) == (48, "cell", "white_balance", "suppress")
    assert (prep.reencode, prep.reencode_quality, prep.downsample) == ("webp", 70, "bicubic")
    assert torch.load(normalised_checkpoint, weights_only=True)["bloodcell"]["preprocess"] == prep.describe()

    own, _ = datamodule_for(module, None, {"eval_num_workers": 0})
    test_ids = own.ids("test")[:6]
    cached = np.asarray(own.splits["test"].images()[:6])
    assert np.array_equal(cached, np.stack([prep(read_image(Path(i))) for i in test_ids]))  # training-time cache

    folder = tmp_path / "lab"
    for i in test_ids:
        (folder / Path(i).parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(i, folder / Path(i).parent.name / Path(i).name)
    other_cfg = compose("evaluate", ["ckpt=x", "data=folder", f"data.root={folder}", f"paths.cache_dir={cache_dir}",
                                     "paths.output_dir=/tmp", "data.image_size=96", "data.preprocess.scale=none"]).data
    other, _ = datamodule_for(module, other_cfg, {"eval_num_workers": 0})
    assert other.preprocess == prep  # the checkpoint's preprocessing wins over the data config's
    how = InferenceSettings(torch.device("cpu"), "none", {"eval_num_workers": 0}, progress=False)
    evaluated = ensemble_predict(load_members([normalised_checkpoint]), other_cfg, "all", how)

    summary = predict_folder([normalised_checkpoint], folder, tmp_path / "pred.csv", device="cpu", batch_size=4)
    assert summary.predicted == len(test_ids)
    with open(tmp_path / "pred.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    for file_id, probs in zip(evaluated.ids, evaluated.probs):
        row = rows[Path(file_id).name]
        assert row["predicted_class"] == module.classes[int(probs.argmax())]
        assert float(row["probability"]) == pytest.approx(float(probs.max()), abs=1e-5)


def test_sample_images_get_a_nucleus():
    """On the committed real sample the nucleus finder works on every image (the normaliser never silently falls back)."""
    files = sorted(SAMPLE.rglob("*.jpg"))
    assert len(files) == 240
    missing = [f.name for f in files if find_nucleus(read_image(f)) is None]
    assert not missing


def test_preprocess_grid_tool(tmp_path):
    """The comparison picture: one row per picked image, one column per setting; a bad variant key is refused."""
    from bloodcell.tools.preprocess_grid import main as grid_main

    png = grid_main([str(SAMPLE), "--out", str(tmp_path / "g.png"), "--per-folder", "2", "--size", "48",
                     "--variants", "none", "colour=white_balance", "scale=cell+context=suppress"])
    assert png.is_file() and png.stat().st_size > 5_000
    with pytest.raises(SystemExit):
        grid_main([str(SAMPLE), "--out", str(tmp_path / "h.png"), "--variants", "colour=white_balance+zoom=2"])
