"""Domain-generalisation methods (issue 12): each is a config option, deterministic under a seed, training-only where it
should be, and survives a checkpoint round trip: stain/colour augmentation, RandConv, Fourier amplitude mixing, MixStyle,
multi-scale TTA."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from bloodcell.augment import build_train_transform
from bloodcell.augment.colour import ChannelMix, RandStainNA, lab_statistics
from bloodcell.augment.domain import FourierAmplitudeMix, RandConv, frequency_band, mix_amplitude
from bloodcell.augment.gpu import build_batch_augment
from bloodcell.checkpoint import load_module
from bloodcell.config import compose
from bloodcell.data.images import read_image, reencode, resize_image
from bloodcell.data.preprocess import find_nucleus
from bloodcell.errors import ConfigError
from bloodcell.evaluation.inference import tta_views, zoom
from bloodcell.models.mixstyle import MixStyle, attach_mixstyle
from bloodcell.module import BloodCellModule
from bloodcell.reproducibility import seed_global_rngs
from bloodcell.training import train
from tests.conftest import FAST, SAMPLE

STATS = {"mean_mu": [183.7, 143.5, 127.2], "mean_sigma": [14.9, 3.6, 6.5], "std_mu": [54.1, 12.2, 20.0], "std_sigma": [10.2, 2.5, 4.0]}


def sample_batch(n: int = 8, size: int = 48) -> np.ndarray:
    files = sorted(SAMPLE.rglob("*.jpg"))[:: 240 // n][:n]
    return np.stack([cv2.resize(read_image(f), (size, size), interpolation=cv2.INTER_AREA) for f in files])


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("op", [RandStainNA(**STATS, std_scale=1.5, p=1.0), ChannelMix(0.2, p=1.0)])
def test_colour_ops_are_seeded_and_keep_shape(op):
    images = sample_batch()
    runs = [[A.Compose([op], seed=3)(image=im)["image"] for im in images] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    assert all(out.shape == im.shape and out.dtype == np.uint8 for out, im in zip(runs[0], images))
    other = [A.Compose([op], seed=4)(image=im)["image"] for im in images]
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], other))


def test_randstainna_lands_on_the_sampled_statistics():
    """With zero spread RandStainNA is Reinhard to the mean template: every image ends with those LAB statistics."""
    op = RandStainNA(STATS["mean_mu"], [0, 0, 0], STATS["std_mu"], [0, 0, 0], p=1.0)
    out = np.stack([A.Compose([op], seed=0)(image=im)["image"] for im in sample_batch()])
    got = lab_statistics(out)
    assert got["mean_mu"] == pytest.approx(STATS["mean_mu"], abs=2.5) and got["std_mu"] == pytest.approx(STATS["std_mu"], abs=3.5)
    assert max(got["mean_sigma"]) < 2.0  # the images now share one staining


def test_channel_mix_keeps_grey_grey_and_brightness():
    grey = np.full((16, 16, 3), 128, np.uint8)
    out = A.Compose([ChannelMix(0.3, p=1.0)], seed=1)(image=grey)["image"]
    assert np.abs(out.astype(int) - 128).max() <= 1


def test_pipeline_switches_turn_the_stain_ops_on():
    off = compose("train", ["augment=pipeline", "paths.output_dir=/tmp"]).augment
    on = compose("train", ["augment=pipeline", "augment.stain_aug.randstain_p=0.5", "augment.stain_aug.channel_mix_p=0.3",
                           "augment.stain_aug.hestain_p=0.2", "augment.scale_range=[0.5,1.5]", "paths.output_dir=/tmp"]).augment
    probs = lambda aug: {type(t).__name__: t.p for t in build_train_transform(aug, seed=0).transforms}  # noqa: E731
    assert probs(off)["RandStainNA"] == 0 and probs(off)["ChannelMix"] == 0 and probs(off)["HEStain"] == 0
    assert (probs(on)["RandStainNA"], probs(on)["ChannelMix"], probs(on)["HEStain"]) == (0.5, 0.3, 0.2)
    affine = next(t for t in build_train_transform(on, seed=0).transforms if isinstance(t, A.Affine))
    assert tuple(affine.scale["x"]) == (0.5, 1.5)


def first_train_op(*overrides: str) -> A.BasicTransform:
    """The first op of `augment=pipeline`'s training transform with these overrides (where `train_webp` sits)."""
    cfg = compose("train", ["augment=pipeline", *overrides, "paths.output_dir=/tmp"])
    return build_train_transform(cfg.augment, seed=0).transforms[0]


def test_train_webp_compresses_every_training_image_first_and_is_off_by_default():
    """`augment.train_webp.p=1` WebP-compresses each training image before the other ops (the measured WebP-copy
    effect as a training-only step); off by default it draws nothing, so the pipeline's random stream is unchanged."""
    first_off = first_train_op()
    first_on = first_train_op("augment.train_webp.p=1.0", "augment.train_webp.quality=[60,60]")
    assert isinstance(first_on, A.ImageCompression) and first_on.p == 1.0 and first_off.p == 0.0
    assert first_on.compression_type == "webp" and tuple(first_on.quality_range) == (60, 60)
    img = read_image(next(iter(sorted(SAMPLE.rglob("*.jpg")))))[:96, :96].copy()
    compressed = first_on(image=img)["image"]
    assert compressed.shape == img.shape and 0 < np.abs(compressed.astype(int) - img.astype(int)).mean() < 10
    assert np.array_equal(compressed, first_on(image=img)["image"])  # a fixed quality: the same pixels every epoch
    assert np.array_equal(first_off(image=img)["image"], img)


def test_train_webp_degrades_as_much_as_the_measured_webp_copy():
    """The training step (OpenCV's WebP encoder via Albumentations) stands in for the measured copy (PIL's WebP at the
    same quality, `reencode`): the two encoders differ pixel for pixel, but must lose about as much of the image."""
    step = first_train_op("augment.train_webp.p=1.0")
    images = [resize_image(read_image(f), 96) for f in sorted(SAMPLE.rglob("*.jpg"))[::30]]
    loss_step = np.mean([np.abs(step(image=i)["image"].astype(int) - i).mean() for i in images])
    loss_copy = np.mean([np.abs(reencode(i, "webp", 85).astype(int) - i).mean() for i in images])
    assert loss_copy > 0.5 and 0.75 < loss_step / loss_copy < 1.33, (loss_step, loss_copy)


@pytest.mark.parametrize("name", ["randconv", "fourier", "randconv_fourier"])
def test_batch_domain_ops_are_seeded_and_change_style_not_shape(name):
    ops = build_batch_augment(compose("train", [f"batch_augment={name}", "paths.output_dir=/tmp"]).batch_augment)
    x = as_tensor(sample_batch(16))
    seed_global_rngs(0)  # what EpochSeed does before every training batch
    a = ops(x)
    seed_global_rngs(0)
    b = ops(x)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    changed = int(((a.float() - x.float()).abs().flatten(1).mean(1) > 0.5).sum())
    if name == "randconv_fourier":
        assert changed >= 8  # two ops at p=0.5 each: about 3 in 4 images restyled
    else:
        assert 0 < changed < 16  # p=0.5: some images restyled, some untouched


def test_domain_ops_identity_when_off_and_float_input():
    x = as_tensor(sample_batch(4))
    assert torch.equal(RandConv(p=0.0)(x), x) and torch.equal(FourierAmplitudeMix(p=0.0)(x), x)
    torch.manual_seed(1)
    mixed = FourierAmplitudeMix(eta=0.0, p=1.0)(x)  # λ = 0: amplitude unchanged → the image back up to FFT rounding
    assert (mixed.int() - x.int()).abs().max() <= 1
    xf = x.float() / 255
    out = RandConv(p=1.0)(xf)
    assert out.dtype == torch.float32 and 0 <= float(out.min()) and float(out.max()) <= 1


def test_mix_amplitude_keeps_the_phase_and_takes_the_mixed_amplitude():
    """λ = 1: the other image's amplitude with this image's phase; λ = 0: the image itself (shared by training and TTA)."""
    torch.manual_seed(0)
    a, b = 0.5 + 0.05 * torch.randn(2, 3, 16, 16), 0.5 + 0.1 * torch.randn(2, 3, 16, 16)  # mid-grey: nothing clamped
    spec_a, amp_b = torch.fft.fft2(a), torch.fft.fft2(b).abs()
    assert torch.allclose(mix_amplitude(spec_a, amp_b, 0.0), a, atol=1e-5)
    out = torch.fft.fft2(mix_amplitude(spec_a, amp_b, 1.0))
    assert torch.allclose(out.abs(), amp_b, atol=1e-3)
    strong = amp_b > 1e-2  # phase is defined where there is amplitude
    assert torch.allclose(torch.polar(torch.ones_like(out.abs()), out.angle())[strong],
                          torch.polar(torch.ones_like(out.abs()), spec_a.angle())[strong], atol=1e-3)
    half = torch.fft.fft2(mix_amplitude(spec_a, amp_b, 0.5)).abs()
    assert torch.allclose(half, 0.5 * spec_a.abs() + 0.5 * amp_b, atol=1e-3)


@pytest.mark.parametrize("band", ["low", "high"])
def test_fourier_band_mixes_one_band_and_leaves_the_other(band):
    """frequencies=low moves only FDA's centred square of low frequencies (colour, shading), high only the rest (texture,
    sharpness); the untouched band keeps each image's own amplitude, and every phase is kept."""
    torch.manual_seed(0)
    x = 0.5 + 0.05 * torch.randn(6, 3, 32, 32)  # float, mid-grey: nothing clamped, so the spectra can be compared exactly
    mask = frequency_band(32, 32, band, 0.09).bool()
    assert int(frequency_band(96, 96, "low", 0.09).sum()) == 17 * 17  # |k| ≤ 8 of 96 in both axes, the mean colour included
    out = FourierAmplitudeMix(p=1.0, frequencies=band)(x)
    before, after = torch.fft.fft2(x), torch.fft.fft2(out)
    assert torch.allclose(after.abs()[..., ~mask], before.abs()[..., ~mask], atol=1e-3)  # the other band untouched
    assert (after.abs()[..., mask] - before.abs()[..., mask]).abs().max() > 0.05  # this band mixed
    if band == "high":  # the mean colour is a low frequency: high-band mixing keeps it exactly
        assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=1e-5)
    unit = lambda z: z / z.abs().clamp_min(1e-8)  # noqa: E731 - the phase as a unit complex number
    strong = (before.abs() > 1e-2) & (after.abs() > 1e-2)
    assert torch.allclose(unit(after)[strong], unit(before)[strong], atol=1e-3)


def test_fourier_band_from_the_config_and_its_refusal():
    ops = build_batch_augment(compose("train", ["batch_augment=fourier", "batch_augment.ops.0.frequencies=high",
                                                "paths.output_dir=/tmp"]).batch_augment)
    (op,) = [m for m in ops.modules() if isinstance(m, FourierAmplitudeMix)]
    assert (op.frequencies, op.cutoff) == ("high", 0.09)
    with pytest.raises(ConfigError, match=r"frequencies='mid': use one of \('all', 'low', 'high'\)"):
        build_batch_augment(compose("train", ["batch_augment=fourier", "batch_augment.ops.0.frequencies=mid",
                                              "paths.output_dir=/tmp"]).batch_augment)


def test_mixstyle_mixes_statistics_in_training_only():
    torch.manual_seed(0)
    feats = torch.randn(6, 4, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + torch.arange(6).view(6, 1, 1, 1)
    ms = MixStyle(p=1.0, alpha=0.1)
    torch.manual_seed(2)
    out = ms(feats)
    torch.manual_seed(2)
    assert torch.equal(out, ms(feats))  # seeded
    assert not torch.allclose(out.mean((2, 3)), feats.mean((2, 3)))
    normalised = lambda t: (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(normalised(out), normalised(feats), atol=1e-4)  # content kept, style changed
    assert torch.equal(ms.eval()(feats), feats)


def test_mixstyle_attaches_to_timm_stages_and_checks_them():
    cfg = compose("train", ["model=small_cnn", "model.mixstyle.p=1.0", "model.mixstyle.stages=[0,2]", "paths.output_dir=/tmp"]).model
    module = BloodCellModule(model=cfg, optim={}, classes=list("abcdefgh"), image_size=32)
    assert len(module.model.mixstyle) == 2 and not any(k.startswith("model.mixstyle") for k in module.state_dict())
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    module.eval()
    assert torch.equal(module(x), module(x))
    with pytest.raises(ConfigError, match="feature stages"):
        attach_mixstyle(module.model, {"p": 0.5, "alpha": 0.1, "stages": [9]})


def test_zoom_views_change_magnification():
    img = np.full((96, 96, 3), 235, np.uint8)
    cv2.circle(img, (48, 48), 16, (80, 40, 120), -1, cv2.LINE_AA)
    x = as_tensor(img[None])
    extents = {z: find_nucleus(zoom(x, z)[0].permute(1, 2, 0).numpy()).extent for z in (0.8, 1.0, 1.25)}
    assert extents[1.0] == pytest.approx(33, abs=2)
    assert extents[1.25] == pytest.approx(33 * 1.25, abs=3) and extents[0.8] == pytest.approx(33 * 0.8, abs=3)
    assert len(tta_views("scales")) == 3 and torch.equal(tta_views("scales")[1](x), x)


def test_training_only_methods_survive_a_checkpoint_round_trip(tmp_path, cache_dir):
    """A run with MixStyle + RandConv/Fourier + stain augmentation reloads with the same options, and evaluation is deterministic."""
    out = tmp_path / "run"
    train(compose("train", ["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "test=false", "evaluate=false",
                            "~logger.tensorboard", "data.image_size=32", "augment=pipeline", "augment.stain_aug.randstain_p=0.5",
                            "batch_augment=randconv_fourier", "model.mixstyle.p=0.5", f"paths.output_dir={out}",
                            f"paths.cache_dir={cache_dir}", *FAST]))
    module = load_module(out / "checkpoints" / "fast_dev_run.ckpt")
    assert module.hparams.model["mixstyle"]["p"] == 0.5 and len(module.model.mixstyle) == 2
    assert [type(op).__name__ for op in module.batch_augment] == ["RandConv", "FourierAmplitudeMix"]
    x = as_tensor(sample_batch(4, 32))
    assert torch.equal(module(x), module(x))  # eval: no style mixing, no batch augmentation
