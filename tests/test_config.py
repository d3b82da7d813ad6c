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
