"""batch_augment=pipeline: the on-device version of augment=pipeline (bloodcell/augment/gpu/), on CPU tensors.

Each op is checked against what it stands in for (OpenCV's JPEG, nearest resize, equalizeHist, HSV, the CPU
stain jitter's identity), for per-image draws, for its probability, and the whole pipeline for seeding.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from bloodcell.augment import StainJitter as CpuStainJitter
from bloodcell.augment import gpu
from bloodcell.augment.gpu.colour import hsv_to_rgb, rgb_to_hsv
from bloodcell.augment.gpu.core import subset_size
from bloodcell.augment.gpu.levels import equalize, posterize, solarize
from bloodcell.errors import ConfigError
from bloodcell.reproducibility import seed_global_rngs

PIPELINE_OPS = ["RandomFlip", "RandomRot90", "RandomAffine", "StainJitter", "HueSaturationValue", "PlanckianJitter", "ToGray",
                "Illumination", "RandomGamma", "RandAugment", "AugMix", "Blur", "JpegLike", "Pixelate", "GaussNoise", "SmearArtifacts",
                "CoarseDropout"]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(skdata.astronaut(), (48, 48), interpolation=cv2.INTER_AREA)


def as_batch(img: np.ndarray, n: int = 1) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1).contiguous()


def as_image(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def pipeline():
    from bloodcell.config import compose

    return gpu.build_batch_augment(compose("train", ["batch_augment=pipeline", "paths.output_dir=/tmp"]).batch_augment)


def test_pipeline_config_lists_every_op_of_the_cpu_recipe(pipeline):
    assert [type(m).__name__ for m in pipeline] == PIPELINE_OPS


def test_pipeline_is_seeded_and_keeps_dtype(pipeline, photo):
    x = as_batch(photo, 16)
    seed_global_rngs(3)
    a = pipeline(x)
    seed_global_rngs(3)
    b = pipeline(x)
    seed_global_rngs(4)
    c = pipeline(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    assert int(changed.sum()) >= 12  # nearly every image is changed by something
    distinct = {a[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) == 16  # per-image draws: no two copies of one photo come out alike
    xf = x.float() / 255
    seed_global_rngs(3)
    out = pipeline(xf)
    assert out.dtype == torch.float32 and 0 <= float(out.min()) and float(out.max()) <= 1
    assert (out * 255 - a.float()).abs().max() <= 0.5 + 1e-4  # same draws in float: only the final rounding differs


def test_each_op_touches_about_p_of_the_images(photo):
    """Every BatchOp with p=0.25 on 64 copies of a photo changes exactly 16 of them (floor(p·N); p·N is whole here)."""
    x = as_batch(photo, 64)
    kinds = [gpu.RandomAffine(degrees=30), gpu.StainJitter(), gpu.HueSaturationValue(), gpu.PlanckianJitter(), gpu.ToGray(),
             gpu.Illumination(), gpu.RandomGamma(), gpu.Blur(), gpu.JpegLike(), gpu.Pixelate(), gpu.GaussNoise(),
             gpu.SmearArtifacts(), gpu.CoarseDropout(), gpu.ColorJitter(0.3, 0.3, 0.3)]
    for op in kinds:
        op.p = 0.25
        seed_global_rngs(0)
        changed = int((op(x) != x).flatten(1).any(1).sum())
        assert 14 <= changed <= 16, (type(op).__name__, changed)  # a draw can be an identity by chance
    assert [subset_size(10, 0.05) for _ in range(2000)].count(1) in range(850, 1150)  # frac(p·N) = 0.5: one image half the time


def test_pixelate_is_opencv_nearest_down_and_up(photo):
    for s in (0.5, 0.35):
        out = as_image(gpu.Pixelate(scale=(s, s), p=1.0)(as_batch(photo)))
        m = int(48 * s)
        ref = cv2.resize(cv2.resize(photo, (m, m), interpolation=cv2.INTER_NEAREST), (48, 48), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(out, ref)


@pytest.mark.parametrize("quality", [30, 90])
def test_jpeg_like_matches_a_real_jpeg(photo, quality):
    ours = as_image(gpu.JpegLike(quality=(quality, quality), p=1.0)(as_batch(photo))).astype(int)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    real = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)
    loss = np.abs(real - photo).mean()
    assert np.abs(ours - real).mean() < 0.35 * loss  # the same artefacts (libjpeg differs in chroma upsampling/rounding)
    assert abs(np.abs(ours - photo).mean() - loss) < 0.2 * loss


def test_level_ops_match_the_cpu_ops(photo):
    from bloodcell.augment.ops import Posterize, Solarize

    x = as_batch(photo).float() / 255
    rng = np.random.default_rng(0)
    as_uint8 = lambda t: (as_image(t) * 255).round().astype(np.uint8)  # noqa: E731
    per_channel = np.dstack([cv2.equalizeHist(np.ascontiguousarray(photo[..., c])) for c in range(3)])
    assert np.array_equal(as_uint8(equalize(x, 0.0, None)), per_channel)
    assert np.array_equal(as_uint8(posterize(x, 1.0, 4)), Posterize(min_bits=4)(photo, 1.0, rng))
    assert np.array_equal(as_uint8(solarize(x, 0.5, 128)), Solarize(max_strength=128)(photo, 0.5, rng))


def test_hsv_conversion_is_opencvs(photo):
    x = as_batch(photo).float() / 255
    h, s, v = rgb_to_hsv(x)
    ref = cv2.cvtColor(photo, cv2.COLOR_RGB2HSV_FULL).astype(float)  # hue 0–255 for a full turn
    assert np.abs((h[0, 0].numpy() * 255 - ref[..., 0] + 128) % 255 - 128).mean() < 1.0
    assert np.abs(s[0, 0].numpy() * 255 - ref[..., 1]).max() <= 1.0 and np.abs(v[0, 0].numpy() * 255 - ref[..., 2]).max() <= 0.5
    assert (hsv_to_rgb(h, s, v) - x).abs().max() < 1e-5
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    h, s, v = rgb_to_hsv(red)
    assert torch.allclose(hsv_to_rgb((h + 1 / 3) % 1, s, v), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1), atol=1e-6)  # +120°


def test_stain_jitter_is_the_cpu_transform(photo):
    """alpha = beta = 0: the optical-density round trip is the identity, as on the CPU; otherwise the background is tinted."""
    x = as_batch(photo)
    assert torch.equal(gpu.StainJitter(alpha=0.0, beta=0.0, p=1.0)(x), x)
    assert np.array_equal(CpuStainJitter(alpha=0.0, beta=0.0, p=1.0)(image=photo)["image"], photo)
    white = torch.full((8, 3, 8, 8), 255, dtype=torch.uint8)
    assert (gpu.StainJitter(alpha=0.0, beta=0.3, p=1.0)(white) != 255).any()


def test_blur_kernels_are_normalised_and_per_image():
    flat = torch.full((6, 3, 20, 20), 0.5)
    assert (gpu.Blur(p=1.0)(flat) - 0.5).abs().max() < 1e-5
    k = gpu.Blur(p=1.0).kernels(64, torch.device("cpu"))
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(64)) and len({tuple(t.flatten().tolist()) for t in k}) == 64


def test_affine_identity_and_scale_direction(photo):
    x = as_batch(photo, 4)
    assert torch.equal(gpu.RandomAffine(degrees=0, scale=(1, 1), p=1.0)(x), x)
    zoomed = gpu.RandomAffine(degrees=0, scale=(2, 2), p=1.0)(x)  # scale > 1 magnifies: the centre fills the frame
    centre = torch.nn.functional.interpolate(x[:, :, 12:36, 12:36].float(), size=48, mode="bilinear", align_corners=False)
    assert (zoomed.float() - centre).abs().mean() < 6


def test_occlusions_and_dropout_stay_local():
    x = torch.full((32, 3, 40, 40), 0.5)
    smear = gpu.SmearArtifacts(count=(1, 1), radius=(0.1, 0.1), opacity=(1.0, 1.0), p=1.0)(x)
    touched = (smear != 0.5).any(1).flatten(1).float().mean(1)
    assert bool((touched > 0).all()) and float(touched.max()) < 0.15  # one blob of radius 4 px (+ rim)
    hole = gpu.CoarseDropout(holes=(1, 1), height=(0.25, 0.25), width=(0.25, 0.25), p=1.0)(x)
    assert torch.equal((hole != 0.5).any(1).flatten(1).sum(1), torch.full((32,), 100))  # one 10×10 hole each


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown op 'rotat'"):
        gpu.RandAugment(ops={"rotat": 30})
    with pytest.raises(ConfigError, match="needs its strength"):
        gpu.AugMix(ops={"rotate": None})
    with pytest.raises(ConfigError, match="kinds"):
        gpu.Blur(kinds=["box"])
    with pytest.raises(ConfigError, match="p=2"):
        gpu.GaussNoise(p=2)
    with pytest.raises(ConfigError, match="quality"):
        gpu.JpegLike(quality=(0, 50))


def test_pipeline_fourier_is_the_pipeline_then_fourier_mixing(pipeline, photo):
    """One preset extends another through `extra_ops` (Hydra replaces lists): pipeline's ops unchanged, Fourier last."""
    from bloodcell.config import compose
    from bloodcell.evaluation.model_card import augment_summary

    cfg = compose("train", ["experiment=gpu_best", "batch_augment=pipeline_fourier", "paths.output_dir=/tmp"])
    built = gpu.build_batch_augment(cfg.batch_augment)
    assert [type(m).__name__ for m in built] == PIPELINE_OPS + ["FourierAmplitudeMix"]
    assert [repr(m) for m in built][:-1] == [repr(m) for m in pipeline]
    x = as_batch(photo, 8)
    seed_global_rngs(5)
    a = built(x)
    seed_global_rngs(5)
    assert torch.equal(a, built(x)) and a.dtype == torch.uint8
    assert "FourierAmplitudeMix" in "\n".join(augment_summary(cfg))  # the model card lists the extra op too
    with pytest.raises(ConfigError, match="batch_augment.extra_ops must be a list"):
        gpu.build_batch_augment({"ops": [], "extra_ops": {"_target_": "bloodcell.augment.domain.FourierAmplitudeMix"}})
