"""Augmentation (issue 3): configs build and yield valid tensors, seeding, AugMix bounds, mixing, JSD, balance, copies, preview."""
from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from bloodcell.augment import AugMix, RandAugment, StainJitter, build_train_transform, mix_chains
from bloodcell.augment import ops as level_ops
from bloodcell.errors import ConfigError
from bloodcell.training import build_datamodule, build_module, train
from tests.conftest import CONF, FAST

AUGMENTS = sorted(p.stem for p in (CONF / "augment").glob("*.yaml") if not p.stem.startswith("_"))
RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(6)]


def sample_dm(compose_cfg, *overrides: str):
    cfg = compose_cfg(["data=sample", *FAST, *overrides])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return cfg, dm


def test_issue_configs_exist():
    assert {"none", "a1", "a2", "a3", "heavy", "randaugment", "augmix", "pipeline"} <= set(AUGMENTS)


@pytest.mark.parametrize("name", AUGMENTS)
def test_each_augment_yields_uint8_chw_tensors(compose_cfg, name):
    _, dm = sample_dm(compose_cfg, f"augment={name}")
    ds = dm.dataset("train", dm.train_transform)
    for i in range(4):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 96, 96) and 0 <= y < 8
    if name != "none":  # something actually changes over a few draws
        assert any(not torch.equal(ds[i][0], dm.dataset("train")[i][0]) for i in range(4))


@pytest.mark.parametrize("name", ["heavy", "randaugment", "augmix", "pipeline"])
def test_seeded_pipelines_reproduce(compose_cfg, name):
    cfg = compose_cfg([f"augment={name}"])
    first, again, other = (build_train_transform(cfg.augment, seed=s) for s in (7, 7, 8))
    out1 = [first(image=im.copy())["image"] for im in IMAGES]
    assert all(np.array_equal(a, again(image=im.copy())["image"]) for a, im in zip(out1, IMAGES))
    assert not all(np.array_equal(a, other(image=im.copy())["image"]) for a, im in zip(out1, IMAGES))


def test_augmix_is_a_convex_combination():
    # with Invert as the only op every chain is img or 255-img, so each pixel must lie between the two
    augmix = A.Compose([AugMix([level_ops.Invert()], width=3, depth=(1, 3), alpha=1.0)], seed=0)
    changed = 0
    for im in IMAGES:
        out = augmix(image=im)["image"]
        lo, hi = np.minimum(im, 255 - im), np.maximum(im, 255 - im)
        assert out.dtype == np.uint8 and out.shape == im.shape
        assert (out >= lo).all() and (out <= hi).all()
        changed += not np.array_equal(out, im)
    assert changed == len(IMAGES)
    chains = [RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)]
    out = mix_chains(IMAGES[0][:8, :8], chains, np.array([0.2, 0.3, 0.5]), 0.7)
    ref = 0.3 * IMAGES[0][:8, :8] + 0.7 * (0.2 * chains[0] + 0.3 * chains[1] + 0.5 * chains[2])
    assert np.abs(out - ref).max() <= 0.5 + 1e-4


@pytest.mark.parametrize(
    "op",
    [
        level_ops.AutoContrast(),
        level_ops.Equalize(),
        level_ops.Rotate(),
        level_ops.Shear("y"),
        level_ops.Translate("x"),
        level_ops.Scale(),
        level_ops.Solarize(),
        level_ops.Posterize(1),
        level_ops.Brightness(),
        level_ops.Contrast(),
        level_ops.Saturation(),
        level_ops.Sharpness(),
        level_ops.Hue(),
        level_ops.Gamma(),
    ],
    ids=repr,
)
def test_level_ops_keep_uint8_at_extreme_levels(op):
    rng = np.random.default_rng(1)
    for level in (0.0, 1.0):
        out = op(IMAGES[0].copy(), level, rng)
        assert out.dtype == np.uint8 and out.shape == IMAGES[0].shape


def test_posterize_edge_cases():
    # magnitude 10 must not reach 0 bits (timm/PIL pitfall: an all-black image or an exception)
    out = level_ops.Posterize(min_bits=1)(IMAGES[0], 1.0, np.random.default_rng(0))
    assert out.any() and set(np.unique(out)) <= {0, 128}
    assert np.array_equal(level_ops.Posterize(4)(IMAGES[0], 0.0, np.random.default_rng(0)), IMAGES[0])
    with pytest.raises(ConfigError, match="min_bits"):
        level_ops.Posterize(min_bits=0)


def test_randaugment_magnitude_matters_and_bad_ops_fail():
    weak = A.Compose([RandAugment([level_ops.Rotate(90)], num_ops=1, magnitude=0, magnitude_std=0, op_prob=1.0)], seed=0)
    strong = A.Compose([RandAugment([level_ops.Rotate(90)], num_ops=1, magnitude=10, magnitude_std=0, op_prob=1.0)], seed=0)
    assert np.array_equal(weak(image=IMAGES[0])["image"], IMAGES[0])
    assert not np.array_equal(strong(image=IMAGES[0])["image"], IMAGES[0])
    with pytest.raises(ConfigError, match="ops"):
        RandAugment([])


def test_stain_jitter_identity_and_shift():
    flat = np.full((8, 8, 3), 200, np.uint8)
    same = A.Compose([StainJitter(alpha=0.0, beta=0.0, p=1.0)], seed=0)(image=flat)["image"]
    assert np.abs(same.astype(int) - 200).max() <= 1
    shifted = A.Compose([StainJitter(alpha=0.5, beta=0.3, p=1.0)], seed=0)(image=flat)["image"]
    assert np.abs(shifted.astype(int) - 200).max() > 5  # the background colour moves too


def test_mixed_labels_sum_to_one(compose_cfg):
    cfg, dm = sample_dm(compose_cfg, "model=small_cnn", "mix.enabled=true")
    module = build_module(cfg, dm)
    x = torch.rand(8, 3, 96, 96)
    y = torch.arange(8)
    mixed, target = module.mixer(x, y)
    assert target.shape == (8, 8) and torch.allclose(target.sum(1), torch.ones(8))
    assert (target < 1).any() and mixed.shape == x.shape


def test_jsd_training_step_runs(compose_cfg):
    cfg = compose_cfg(
        [
            "data=sample",
            "model=small_cnn",
            "augment=augmix",
            "augment.jsd.enabled=true",
            "trainer.fast_dev_run=true",
            "data.batch_size=8",
            "evaluate=false",
            "test=false",
            *FAST,
        ]
    )
    _, dm = sample_dm(compose_cfg, "augment=augmix", "augment.jsd.enabled=true")
    x, _ = dm.dataset("train", dm.train_transform)[0]
    assert x.shape == (9, 96, 96) and torch.equal(x[:3], dm.dataset("train")[0][0])  # clean view first
    train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert np.isfinite(summary["metrics"]["train/loss_step"])


def test_jsd_refuses_mixing(compose_cfg):
    cfg, dm = sample_dm(compose_cfg, "model=small_cnn", "augment=augmix", "augment.jsd.enabled=true", "mix.enabled=true")
    with pytest.raises(ConfigError, match="mix.enabled"):
        build_module(cfg, dm)


def test_oversampled_repeats_are_augmented_differently(compose_cfg):
    """data.balance=oversample repeats indices; the Dataset augments at every access, so repeats differ."""
    from bloodcell.data.datamodule import oversample_indices
    from bloodcell.data.dataset import CachedImageDataset

    _, dm = sample_dm(compose_cfg, "augment=pipeline")
    train_split = dm.splits["train"]
    keep = np.concatenate([np.flatnonzero(train_split.labels == 0)[:2], np.flatnonzero(train_split.labels == 1)[:6]])  # 2 vs 6: unbalanced
    images, labels = np.asarray(train_split.images()[keep]), train_split.labels[keep]
    ds = CachedImageDataset(images, labels, dm.train_transform, oversample_indices(labels, seed=0))
    assert np.bincount(ds.labels[ds.indices]).tolist() == [6, 6]
    positions = np.flatnonzero(ds.indices == ds.indices[ds.labels[ds.indices] == 0][0])
    assert len(positions) == 3
    views = [ds[int(p)][0] for p in positions]
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])


def test_offline_copies_are_cached_and_reused(compose_cfg):
    overrides = ("augment=heavy", "data.copies=2", "data.copies_mixed=true")
    _, dm = sample_dm(compose_cfg, *overrides)
    ds = dm.offline_copies_dataset()
    n = len(dm.splits["train"])
    assert len(ds) == 4 * n and ds.transform is None
    assert np.array_equal(ds.labels[:n], ds.labels[n : 2 * n])
    assert torch.equal(ds[0][0], dm.dataset("train")[0][0]) and not torch.equal(ds[0][0], ds[n][0])
    folder = Path(ds._source).parent
    stamp = (folder / "meta.json").stat().st_mtime_ns
    _, dm2 = sample_dm(compose_cfg, *overrides)
    ds2 = dm2.offline_copies_dataset()
    assert Path(ds2._source).parent == folder and (folder / "meta.json").stat().st_mtime_ns == stamp
    _, dm3 = sample_dm(compose_cfg, "augment=heavy", "data.copies=1")
    assert Path(dm3.offline_copies_dataset()._source).parent != folder  # keyed by N
    _, dm4 = sample_dm(compose_cfg, "augment=none", "data.copies=1")
    with pytest.raises(ConfigError, match="augmentation"):
        dm4.offline_copies_dataset()


def test_preview_writes_grid_and_refuses_overwrite(tmp_path, cache_dir, monkeypatch):
    from bloodcell.tools.preview import main

    monkeypatch.setenv("BLOODCELL_CACHE", str(cache_dir))
    png = main(["augment=pipeline", "--rows", "1", "--samples", "3", "--out", str(tmp_path / "p")])
    assert png.stat().st_size > 10_000
    info = json.loads((tmp_path / "p" / "preview.json").read_text())
    assert info["augment"] == "pipeline" and len(info["images"]) == 8
    with pytest.raises(SystemExit):
        main(["augment=pipeline", "--out", str(tmp_path / "p")])


def test_shifted_split_is_seeded_foldered_and_never_overwritten(tmp_path):
    from bloodcell.augment.shift import shift_spec, write_shifted_split
    from bloodcell.data.classes import CLASS_NAMES
    from bloodcell.errors import BloodcellError

    images, labels = np.stack(IMAGES[:4]), np.array([0, 0, 7, 7])
    a = write_shifted_split(images, labels, list(CLASS_NAMES), tmp_path / "a", shift_spec("k", "test", 1))
    b = write_shifted_split(images, labels, list(CLASS_NAMES), tmp_path / "b", shift_spec("k", "test", 1))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert [str(f.parent) for f in files] == ["basophil", "basophil", "platelet", "platelet"]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # same seed, same pixels
    assert write_shifted_split(images, labels, list(CLASS_NAMES), a, shift_spec("k", "test", 1)) == a  # reused
    with pytest.raises(BloodcellError, match="refusing to overwrite"):
        write_shifted_split(images, labels, list(CLASS_NAMES), a, shift_spec("k", "test", 2))
