"""Every option of every config group composes, and resolves, with the real conf/."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "hparams_search", "local"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


CASES = [(g, o) for g in GROUPS for o in options(g)]
CONFIG_FOR_GROUP = {"bmk": "benchmark_sets"}  # groups that belong to another top-level config than train


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes(compose_cfg, group, option):
    extra = {"folder": ["data.root=/tmp/x"], "npz": ["data.path=/tmp/x.npz"]}.get(option, []) if group == "data" else []
    cfg = compose_cfg([f"{group}={option}", *extra], config_name=CONFIG_FOR_GROUP.get(group, "train"))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"]
    if group == "data":
        assert resolved["data"]["_target_"] == "bloodcell.data.BloodCellDataModule"
        assert "_target_" in resolved["data"]["source"]


def test_defaults(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.source._target_ == "bloodcell.data.BloodMNISTSource"
    assert cfg.data.size == 128 and cfg.data.image_size == 96
    assert cfg.seed == 42


def test_required_groups_have_expected_options():
    assert {"small_cnn", "resnet50", "resnet152", "effnet_b5", "effnet_b6", "effnet_lite0"} <= set(options("model"))
    assert {"adam", "adamw", "sgd", "lion"} <= set(options("optim"))
    assert {"folder", "npz", "bloodmnist", "sample"} <= set(options("data"))


def test_evaluate_config_composes(compose_cfg):
    cfg = compose_cfg(["ckpt=/x.ckpt", "data=folder", "data.root=/tmp/y"], config_name="evaluate")
    assert cfg.data.root == "/tmp/y" and cfg.ckpt == "/x.ckpt"
    assert compose_cfg(["ckpt=/x.ckpt"], config_name="evaluate").get("data") is None


def test_trusted_target_rule_is_one_function():
    """config.check_trusted_targets refuses any foreign _target_ at any depth; batch ops have their own prefix list."""
    from bloodcell.config import TRUSTED_BATCH_OP_PREFIXES, check_trusted_targets, is_trusted_target
    from bloodcell.errors import CheckpointError

    check_trusted_targets({"_target_": "bloodcell.models.build_classifier", "head": {"hidden": [8]}}, "model config")
    with pytest.raises(CheckpointError, match="'os.system' is not a bloodcell class"):
        check_trusted_targets({"_target_": "bloodcell.data.BloodCellDataModule", "source": [{"_target_": "os.system"}]}, "data config")
    assert is_trusted_target("torchvision.transforms.v2.RandomInvert", TRUSTED_BATCH_OP_PREFIXES)
    assert not is_trusted_target("torchvision.transforms.v2.RandomInvert")


def test_code_reads_its_defaults_from_the_yaml(compose_cfg):
    """Where code has no composed config it reads conf/ itself, so the values equal the composed ones."""
    from bloodcell.data.datamodule import data_defaults
    from bloodcell.evaluation.runner import EvalOptions

    composed = OmegaConf.to_container(compose_cfg(["data=npz", "data.path=/x.npz"]).data, resolve=True)
    assert {k: v for k, v in data_defaults().items() if k != "cache_dir"} == {k: composed[k] for k in data_defaults() if k != "cache_dir"}
    from_yaml = EvalOptions.defaults()
    from_cli = EvalOptions.from_cfg(compose_cfg(["ckpt=/x.ckpt"], config_name="evaluate"))
    for name in ("split", "tta", "calibrate", "ece_bins", "device", "overwrite"):
        assert getattr(from_yaml, name) == getattr(from_cli, name), name
