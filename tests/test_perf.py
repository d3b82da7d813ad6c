"""Performance paths on CPU: on-device batch augmentation, torch.compile switch, shared memory-mapped cache,
the benchmark's measuring helpers, and the multirun + DDP launch guard."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from bloodcell.augment.gpu import ColorJitter, PerImage, RandomAffine, RandomFlip, RandomRot90, build_batch_augment
from bloodcell.data.dataset import CachedImageDataset
from bloodcell.distributed import check_ddp_launch, launched_externally, lightning_relaunches
from bloodcell.errors import ConfigError
from bloodcell.training import build_datamodule, build_module
from tests.conftest import FAST


def _batch(n: int = 16, size: int = 24) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def test_batch_ops_draw_parameters_per_image():
    """Flips/rot90 on a batch of identical images: some images change, some not (one draw per image)."""
    x = _batch(1).expand(64, -1, -1, -1).contiguous()
    for op in (RandomFlip(0.5, 0.0), RandomRot90(0.5)):
        out = op(x)
        changed = (out != x).flatten(1).any(1)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        assert 0 < int(changed.sum()) < 64, type(op).__name__
    flipped = RandomFlip(1.0, 0.0)(x)
    assert torch.equal(flipped, x.flip(3))


def test_affine_and_colour_keep_dtype_range_and_identity_at_zero():
    x = _batch()
    assert torch.equal(RandomAffine(degrees=0, scale=(1, 1), p=1.0)(x), x)  # identity grid reproduces pixels
    assert torch.equal(ColorJitter(0.0, 0.0, 0.0, p=1.0)(x), x)
    out = RandomAffine(degrees=30, scale=(0.8, 1.2), translate=0.1, p=1.0)(x)
    assert out.dtype == torch.uint8 and not torch.equal(out, x)
    xf = x.float() / 255
    jit = ColorJitter(0.4, 0.4, 0.4, p=1.0)(xf)
    assert jit.dtype == torch.float32 and float(jit.min()) >= 0 and float(jit.max()) <= 1
    per_image_means = jit.mean(dim=(1, 2, 3)) / xf.mean(dim=(1, 2, 3))
    assert per_image_means.std() > 0.01  # each image got its own brightness factor


def test_build_batch_augment_from_config(compose_cfg):
    assert build_batch_augment(compose_cfg([]).batch_augment) is None  # default: off
    aug = build_batch_augment(compose_cfg(["batch_augment=basic"]).batch_augment)
    assert [type(m).__name__ for m in aug] == ["RandomFlip", "RandomRot90", "RandomAffine", "ColorJitter"]
    tv = build_batch_augment({"ops": [{"_target_": "torchvision.transforms.v2.RandomInvert", "p": 0.5}]})
    assert isinstance(tv[0], PerImage) and tv(_batch()).shape == (16, 3, 24, 24)
    with pytest.raises(ConfigError, match=r"ops\[0\]"):
        build_batch_augment({"ops": [{"_target_": "os.system", "command": "true"}]})
    with pytest.raises(ConfigError, match="list of ops"):
        build_batch_augment({"ops": {"_target_": "bloodcell.augment.gpu.RandomFlip"}})


def test_batch_augment_runs_in_training_only(compose_cfg):
    """Training with batch_augment=basic: the ops see every training batch, never validation ones."""
    cfg = compose_cfg(["data=sample", "model=small_cnn", "augment=none", "batch_augment=basic", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false", "evaluate=false", *FAST])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm)
    seen: list[int] = []
    module.batch_augment.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    import lightning as L

    L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=dm)
    assert seen == [32, 32]
    assert module.hparams.batch_augment["ops"][0]["_target_"].endswith("RandomFlip")


def test_compile_switch_keeps_checkpoint_keys(compose_cfg):
    """compile={backend: eager} goes through torch.compile; parameter names (checkpoints) are unchanged."""
    cfg = compose_cfg(["data=sample", "model=small_cnn", "+compile.backend=eager", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false", "evaluate=false", *FAST])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    plain_keys = set(build_module(compose_cfg(["data=sample", "model=small_cnn", *FAST]), dm).state_dict())
    module = build_module(cfg, dm)
    assert module.model._compiled_call_impl is not None
    assert set(module.state_dict()) == plain_keys
    assert module(torch.zeros(2, 3, 96, 96, dtype=torch.uint8)).shape == (2, 8)
    cfg_bad = compose_cfg(["data=sample", "model=small_cnn", "compile=[1]", *FAST])
    with pytest.raises(ConfigError, match="compile="):
        build_module(cfg_bad, dm)


def test_dataset_pickles_without_pixels(tmp_path):
    """Workers get the memmap's path, not the pixels: the pickled dataset is tiny and reads the same file."""
    images = np.random.default_rng(0).integers(0, 255, (200, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    ds = CachedImageDataset(tmp_path / "x.npy", np.zeros(200, dtype=np.int64))
    _ = ds[0]  # opened in the parent
    assert isinstance(ds.images, np.memmap)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000 < images.nbytes
    clone = pickle.loads(blob)
    assert torch.equal(clone[7][0], torch.from_numpy(images[7]).permute(2, 0, 1))


def test_loader_settings_reach_dataloader(compose_cfg):
    cfg = compose_cfg(["data=sample", "data.num_workers=1", "data.pin_memory=true", "data.persistent_workers=true"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.pin_memory and loader.persistent_workers
    # evaluation loaders read plain memory-map slices: no worker processes (they would only cost memory)
    assert dm.val_dataloader().num_workers == 0 and not dm.val_dataloader().persistent_workers


def test_ddp_launch_guard():
    ddp = {"strategy": "ddp", "devices": 2, "num_nodes": 1}
    assert lightning_relaunches(ddp)
    assert lightning_relaunches({"strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy"}, "devices": "auto"})
    assert not lightning_relaunches({"strategy": "ddp_spawn", "devices": 2})
    assert not lightning_relaunches({"strategy": "ddp", "devices": 1})
    assert not lightning_relaunches({"strategy": "auto", "devices": 4})
    with pytest.raises(ConfigError, match="re-launch the whole sweep"):
        check_ddp_launch(ddp, multirun=True, env={})
    check_ddp_launch(ddp, multirun=False, env={})  # a single run: Lightning's launcher is fine
    check_ddp_launch(ddp, multirun=True, env={"TORCHELASTIC_RUN_ID": "x"})  # torchrun started the ranks
    assert launched_externally({"SLURM_NTASKS": "4"}) and not launched_externally({"SLURM_NTASKS": "1"})


@pytest.mark.slow
def test_throughput_benchmark_runs(tmp_path, cache_dir):
    """The benchmark script end to end on the sample (tiny budget): both paths measured, figures printed."""
    from benchmarks.train_throughput import main

    out = tmp_path / "bench.json"
    results = main(["--models", "small_cnn", "--steps", "4", "--warmup", "1", "--repeats", "1", "--json", str(out),
                    "data=sample", f"paths.cache_dir={cache_dir}", "data.num_workers=0", "data.batch_size=8",
                    "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv"])
    (r,) = results
    assert r["plain_img_per_s"] > 0 and r["framework_img_per_s"] > 0 and r["loader_img_per_s"] > 0 and r["model_img_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["framework_img_per_s"] / r["plain_img_per_s"])
    assert r["cpu_ratio"] == pytest.approx(r["framework_img_per_cpu_s"] / r["plain_img_per_cpu_s"])
    assert r["peak_pss_mib"] > 50 and r["bottleneck"] in ("loader", "model")
    assert json.loads(out.read_text())[0]["model"] == "small_cnn"


def test_throttled_progress_bar_skips_fast_batches(monkeypatch):
    """Fast steps: the bar (metrics read = device sync, redraw) runs on the first and last batch only."""
    from lightning.pytorch.callbacks import RichProgressBar

    from bloodcell.callbacks import ThrottledRichProgressBar

    drawn: list[int] = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, t, m, o, b, i: drawn.append(i))
    monkeypatch.setattr(ThrottledRichProgressBar, "total_train_batches", property(lambda self: 50))
    bar = ThrottledRichProgressBar(min_interval_s=3600)
    for i in range(50):
        bar.on_train_batch_end(None, None, None, None, i)
    assert drawn == [0, 49]
    slow = ThrottledRichProgressBar(min_interval_s=0)
    drawn.clear()
    for i in range(3):
        slow.on_train_batch_end(None, None, None, None, i)
    assert drawn == [0, 1, 2]


def test_step_windows_time_steady_state_steps_across_epochs():
    """Benchmarks' timing windows: per epoch from the end of the warm-up step to the end of its last step (epoch
    boundaries outside), one device sync at each end; here 3 epochs of 5 steps, warm-up 2 then 1 per epoch."""
    from benchmarks._common import Windows

    w = Windows(warmup=2, epoch_warmup=1, device="cpu")
    for epoch in range(3):
        for i in range(5):
            w.after_step(i, epoch, 8, last_in_epoch=i == 4)
    r = w.result()
    assert r["timed_steps"] == 3 + 4 + 4 and r["images"] == 8 * 11 and r["seconds"] > 0
    short = Windows(warmup=5, epoch_warmup=1, device="cpu")
    for i in range(5):  # the warm-up is the epoch's last step: no window in that epoch
        short.after_step(i, 0, 8, last_in_epoch=i == 4)
    assert short.images == 0 and short._t0 is None
