"""Corruptions keep shape/dtype and hurt more with severity; benchmark sets are byte-reproducible from a seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from bloodcell.errors import ConfigError
from bloodcell.evaluation.benchmark_sets import BenchmarkSpec, build_benchmark_sets
from bloodcell.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from tests.conftest import SAMPLE


def sample_images(size: int) -> list[np.ndarray]:
    files = [sorted((SAMPLE / c).glob("*.jpg"))[0] for c in ("basophil", "erythroblast", "platelet")]
    return [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]


def test_at_least_ten_corruptions():
    assert len(CORRUPTIONS) >= 10 and SEVERITIES == (1, 2, 3, 4, 5)


def similarity(name: str, clean: np.ndarray, out: np.ndarray) -> float:
    """SSIM to the clean image; for hue_shift minus the mean colour error, since SSIM hardly sees a hue
    rotation on near-grey regions (a platelet's background) and is not monotone in the angle there."""
    if name == "hue_shift":
        return -float(np.abs(clean.astype(float) - out.astype(float)).mean())
    return float(structural_similarity(clean, out, channel_axis=2, data_range=255))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_damage_grows_with_severity(name):
    for size in (64, 96):
        for img in sample_images(size):
            sim = []
            for sev in SEVERITIES:
                out = corrupt(img, name, sev, np.random.default_rng(1))
                assert out.shape == img.shape and out.dtype == np.uint8
                np.testing.assert_array_equal(out, corrupt(img, name, sev, np.random.default_rng(1)))  # seeded → same
                sim.append(similarity(name, img, out))
            assert sim[0] < similarity(name, img, img) - 1e-3, f"{name} s1 leaves the image unchanged"
            assert all(a > b for a, b in zip(sim, sim[1:])), f"{name} at {size}px: similarity {np.round(sim, 4)} not decreasing"


def test_corrupt_rejects_bad_input():
    img = sample_images(64)[0]
    with pytest.raises(ValueError):
        corrupt(img.astype(np.float32), "jpeg", 1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        corrupt(img, "jpeg", 6, np.random.default_rng(0))
    with pytest.raises(KeyError):
        corrupt(img, "fog", 1, np.random.default_rng(0))


def build(compose_cfg, out: Path, *extra: str) -> dict:
    cfg = compose_cfg(["data=sample", "data.num_workers=0", f"out={out}", "corruptions=[jpeg,bubbles]", "severities=[1,5]", *extra],
                      config_name="benchmark_sets")
    return build_benchmark_sets(cfg.data, cfg.out, BenchmarkSpec.from_cfg(cfg))


def test_builder_is_byte_reproducible(compose_cfg, tmp_path):
    m1 = build(compose_cfg, tmp_path / "a")
    m2 = build(compose_cfg, tmp_path / "b")
    m3 = build(compose_cfg, tmp_path / "c", "seed=1")
    rels = [
        "clean.npz",
        "bmk.npz",
        "corruptions/jpeg_s1.npz",
        "corruptions/jpeg_s5.npz",
        "corruptions/bubbles_s1.npz",
        "corruptions/bubbles_s5.npz",
    ]
    assert sorted(m1["files"]) == sorted(rels)
    for rel in rels:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert m1["files"] == m2["files"]
    assert m3["files"]["bmk.npz"] != m1["files"]["bmk.npz"] and m3["files"]["clean.npz"] == m1["files"]["clean.npz"]
    with np.load(tmp_path / "a" / "bmk.npz") as z, np.load(tmp_path / "a" / "clean.npz") as c:
        assert z["images"].shape == c["images"].shape and z["images"].dtype == np.uint8
        assert (z["images"] != c["images"]).any(axis=(1, 2, 3)).mean() > 0.9  # nearly every image changed
        np.testing.assert_array_equal(z["labels"], c["labels"])
        assert list(z["source_ids"]) == list(c["source_ids"])
    with pytest.raises(ConfigError, match="already holds benchmark sets"):
        build(compose_cfg, tmp_path / "a")


def test_built_set_reads_through_the_npz_data_path(compose_cfg, tmp_path):
    build(compose_cfg, tmp_path / "s", "bmk=mild")
    cfg = compose_cfg(
        [
            "data=npz",
            f"data.path={tmp_path / 's' / 'bmk.npz'}",
            "data.num_workers=0",
            "data.dedup=false",
            "data.val_fraction=0",
            "data.test_fraction=0",
            "data.allow_missing_classes=true",
        ]
    )
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup()
    with np.load(tmp_path / "s" / "bmk.npz") as z:
        assert len(dm.dataset("all")) == len(z["labels"])
        assert sorted(dm.dataset("all").labels.tolist()) == sorted(z["labels"].tolist())
