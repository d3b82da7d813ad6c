"""`consistency.weight`: each training image and its batch-augmented copy, trained on together and asked to agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bloodcell.checkpoint import load_module
from bloodcell.errors import ConfigError
from bloodcell.models.consistency import ConsistencySettings, js_consistency
from bloodcell.models.distill import distillation_loss
from bloodcell.training import train
from tests.conftest import FAST
from tests.test_distill import Recorder, small_module

INVERT = {"ops": [{"_target_": "tests.test_consistency.Invert"}]}  # a batch augmentation whose effect is known exactly
MIX = {"enabled": True, "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5, "mode": "batch",
       "label_smoothing": 0.0, "off_last_epochs": 0}
MIXUP_ONLY, CUTMIX_ONLY = {**MIX, "cutmix_alpha": 0.0}, {**MIX, "mixup_alpha": 0.0}  # each of timm's two mixing paths


class Invert(torch.nn.Module):
    """Photographic negative: pixel v → 1 − v on the batch op's 0–1 floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x


@pytest.fixture(autouse=True)
def _allow_test_ops(monkeypatch):
    """Batch ops must come from trusted packages; this test module's Invert is added for these tests only."""
    import bloodcell.augment.gpu.core as core

    monkeypatch.setattr(core, "TRUSTED_BATCH_OP_PREFIXES", (*core.TRUSTED_BATCH_OP_PREFIXES, "tests.test_consistency."))


def test_js_consistency_is_the_jensen_shannon_divergence_written_out():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen) * 2
    p, q = a.softmax(-1), b.softmax(-1)
    m = (p + q) / 2
    by_hand = 0.5 * ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean()
    assert torch.allclose(js_consistency(torch.cat([a, b])), by_hand, atol=1e-6)
    assert torch.allclose(js_consistency(torch.cat([a, b])), js_consistency(torch.cat([b, a])), atol=1e-6)  # symmetric
    assert js_consistency(torch.cat([a, a])).abs() < 1e-6  # views that agree pay nothing
    assert js_consistency(torch.cat([a, b])) <= torch.log(torch.tensor(2.0))  # JS is bounded by log 2


def test_settings_off_by_default_and_refuse_what_cannot_work(compose_cfg):
    assert ConsistencySettings.from_cfg(None).weight == 0.0
    assert ConsistencySettings.from_cfg({"weight": 12}).weight == 12.0
    with pytest.raises(ConfigError, match=r"consistency.weight=-1.0 must be ≥ 0"):
        ConsistencySettings.from_cfg({"weight": -1})
    with pytest.raises(ConfigError, match=r"consistency is missing|weight"):
        ConsistencySettings.from_cfg({"wieght": 1})
    with pytest.raises(ConfigError, match=r"batch_augment has no ops; choose one \(e.g. batch_augment=fourier\)"):
        small_module(compose_cfg, 24, consistency={"weight": 12})
    with pytest.raises(ConfigError, match=r"cannot be combined with augment.jsd.enabled=true"):
        small_module(compose_cfg, 24, batch_augment=INVERT, consistency={"weight": 12}, jsd={"alpha": 12})
    small_module(compose_cfg, 24, consistency={"weight": 0})  # off: no second view needed


def test_both_views_are_fed_mixed_alike_and_the_loss_is_task_on_both_plus_js(compose_cfg):
    torch.manual_seed(0)
    np.random.seed(0)  # timm's Mixup draws lambda and the box with numpy
    x, y = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8), torch.arange(4)
    for mix in (MIXUP_ONLY, CUTMIX_ONLY):
        module = small_module(compose_cfg, 24, batch_augment=INVERT, mix=mix, consistency={"weight": 3.0})
        module.model = Recorder(module.model)
        for _ in range(3):  # fresh draws of lambda (and box)
            module.training_step((x, y), 0)
            fed = module.model.seen[-1]
            assert fed.shape == (8, 3, 24, 24)  # the clean views, then the augmented ones
            pixels = fed * module.std + module.mean
            clean, augmented = pixels[:4], pixels[4:]
            assert not torch.allclose(clean, x.float(), atol=1e-3)  # mixed
            # the negative of the mixed clean view is the mixed negative: the same partner, lambda and box for both views
            assert torch.allclose(augmented, 255.0 - clean, atol=1e-3)
    module.mixer = None  # hard labels: the loss can be written out
    loss = module.training_step((x, y), 0)
    logits = module.model.net(module.model.seen[-1])
    expected = F.cross_entropy(logits, y.repeat(2)) + 3.0 * js_consistency(logits)
    assert torch.allclose(loss, expected, atol=1e-5)
    off = small_module(compose_cfg, 24, batch_augment=INVERT)
    off.model = Recorder(off.model)
    off.training_step((x, y), 0)
    assert off.model.seen[-1].shape[0] == 4  # weight 0: one view, as before


def test_consistency_term_stays_when_distilling_from_the_teacher_alone(compose_cfg):
    """distill.weight=1 replaces the task loss by the teacher's; the views' agreement is a separate term and stays."""
    torch.manual_seed(0)
    teacher = small_module(compose_cfg, 24).eval()
    student = small_module(compose_cfg, 24, batch_augment=INVERT, consistency={"weight": 3.0},
                           distill={"teacher": "teacher.ckpt", "weight": 1.0, "temperature": 1.0})
    student.attach_teacher(teacher, "teacher.ckpt")
    student.model = Recorder(student.model)
    x, y = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8), torch.arange(4)
    loss = student.training_step((x, y), 0)
    fed = student.model.seen[-1]
    logits, teacher_logits = student.model.net(fed), teacher.model(fed)
    expected = distillation_loss(logits, teacher_logits) + 3.0 * js_consistency(logits)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_consistency_run_from_the_real_config(compose_cfg, tmp_path):
    out = tmp_path / "run"
    train(compose_cfg(["data=sample", "model=small_cnn", "test=false", "evaluate=false", "~logger.tensorboard",
                       "trainer.max_epochs=1", "data.image_size=32", "batch_augment=fourier", "batch_augment.ops.0.p=1.0",
                       "mix.enabled=true", "consistency.weight=12", f"paths.output_dir={out}", *FAST]))
    summary = json.loads((out / "summary.json").read_text())
    card = (out / "checkpoints" / "model_card.md").read_text()
    assert "consistency between each image and its batch-augmented copy (Jensen-Shannon, weight 12.0" in card
    module = load_module(summary["best_checkpoint"])
    assert module.consistency.weight == 12.0 and module.hparams.consistency == {"weight": 12.0}
    with pytest.raises(ConfigError, match=r"batch_augment has no ops"):
        train(compose_cfg(["data=sample", "model=small_cnn", "consistency.weight=1", f"paths.output_dir={tmp_path / 'bad'}", *FAST]))
