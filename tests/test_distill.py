"""`distill.teacher`: knowledge distillation from a trained checkpoint on the student's own augmented, mixed batch."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from bloodcell.checkpoint import load_module, read_checkpoint
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models.distill import DistillSettings, FrozenTeacher, distillation_loss
from bloodcell.module import BloodCellModule
from bloodcell.training import train
from tests.conftest import FAST

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
ADAM = {"optimizer": {"_target_": "timm.optim.create_optimizer_v2", "opt": "adamw", "lr": 1e-3, "weight_decay": 0.0},
        "scheduler": {"name": "none"}}


def test_distillation_loss_is_the_tempered_kl_written_out():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen) * 3
    for t in (1.0, 2.0):
        p_t, log_p_s = (teacher / t).softmax(-1), (student / t).log_softmax(-1)
        by_hand = t * t * (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
        assert torch.allclose(distillation_loss(student, teacher, t), by_hand, atol=1e-6)
    assert distillation_loss(teacher, teacher).abs() < 1e-6  # a student that matches its teacher pays nothing


def test_settings_off_by_default_combine_by_weight_and_refuse_bad_values():
    assert DistillSettings.from_cfg(None).teacher is None
    assert DistillSettings.from_cfg({"teacher": None, "weight": 5, "temperature": 0}).teacher is None  # off: not checked
    s = DistillSettings.from_cfg({"teacher": "t.ckpt", "weight": 0.25, "temperature": 1.0})
    student, teacher, task = torch.randn(3, 8), torch.randn(3, 8), torch.tensor(2.0)
    assert torch.allclose(s.combine(task, student, teacher), 0.75 * task + 0.25 * distillation_loss(student, teacher))
    pure = DistillSettings.from_cfg({"teacher": "t.ckpt", "weight": 1.0, "temperature": 1.0})
    assert torch.equal(pure.combine(task, student, teacher), distillation_loss(student, teacher))
    with pytest.raises(ConfigError, match=r"distill.weight=1.5: use a value in \[0, 1\]"):
        DistillSettings.from_cfg({"teacher": "t.ckpt", "weight": 1.5, "temperature": 1.0})
    with pytest.raises(ConfigError, match=r"distill.temperature=0.0 must be > 0"):
        DistillSettings.from_cfg({"teacher": "t.ckpt", "weight": 1.0, "temperature": 0})
    with pytest.raises(ConfigError, match=r"distill is missing 'temperature'|temperature"):
        DistillSettings.from_cfg({"teacher": "t.ckpt", "weight": 1.0})


class Recorder(torch.nn.Module):
    """A network stand-in that remembers what it was fed (to check what the teacher sees)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def small_module(compose_cfg, image_size: int, **kwargs) -> BloodCellModule:
    model_cfg = dict(compose_cfg(["model=small_cnn", "model.head.dropout=0.0"]).model)
    return BloodCellModule(model=model_cfg, optim=ADAM, classes=CLASSES, image_size=image_size, **kwargs)


def test_teacher_scores_the_students_mixed_batch_at_its_own_size_and_stays_frozen(compose_cfg):
    torch.manual_seed(0)
    teacher = small_module(compose_cfg, 48).eval()
    teacher_net = teacher.model  # the network itself (the wrapper below records what it is fed)
    bn_before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    mix = {"enabled": True, "mixup_alpha": 0.8, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.0, "mode": "batch",
           "label_smoothing": 0.0, "off_last_epochs": 0}
    student = small_module(compose_cfg, 24, mix=mix, distill={"teacher": "teacher.ckpt", "weight": 1.0, "temperature": 2.0})
    student.attach_teacher(teacher, "teacher.ckpt")
    student._teacher.module.model = Recorder(student._teacher.module.model)
    student.model = Recorder(student.model)
    x, y = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8), torch.arange(4)
    loss = student.training_step((x, y), 0)
    fed_student = student.model.seen[0]
    pixels = fed_student * student.std + student.mean  # the mixed batch as pixels
    assert not torch.allclose(pixels, x.float(), atol=1e-3)  # mixing happened before the teacher saw it
    expected_in = (F.interpolate(pixels, size=(48, 48), mode="bilinear", align_corners=False, antialias=True) - teacher.mean) / teacher.std
    assert torch.allclose(student._teacher.module.model.seen[0], expected_in, atol=1e-4)  # same pixels, teacher's size and normalisation
    with torch.no_grad():
        want = distillation_loss(student.model.net(fed_student), teacher_net(expected_in), 2.0)
    assert torch.allclose(loss, want, atol=1e-5)  # weight 1: the loss is the teacher's KL alone
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, bn_before[k]) for k, v in teacher_net.state_dict().items())  # eval mode: no BN update
    assert not any(k.startswith("_teacher") or "teacher" in k for k in student.state_dict())  # not part of the student


def test_weight_zero_is_the_task_loss_without_a_teacher_pass(compose_cfg):
    torch.manual_seed(0)
    student = small_module(compose_cfg, 24, distill={"teacher": "t.ckpt", "weight": 0.0, "temperature": 1.0})
    student.attach_teacher(small_module(compose_cfg, 48), "t.ckpt")
    student._teacher.module.model = Recorder(student._teacher.module.model)
    x, y = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8), torch.arange(4)
    loss = student.training_step((x, y), 0)
    assert student._teacher.module.model.seen == []  # no wasted 192 px forward pass
    assert torch.allclose(loss, F.cross_entropy(student.model(student.preprocess(x)), y), atol=1e-6)


def test_teacher_must_share_classes_and_what_the_image_shows(compose_cfg):
    student = small_module(compose_cfg, 32, distill={"teacher": "t.ckpt", "weight": 1.0, "temperature": 1.0})
    other_classes = BloodCellModule(model=dict(compose_cfg(["model=small_cnn"]).model), optim=ADAM, classes=CLASSES[::-1], image_size=64)
    with pytest.raises(ConfigError, match=r"distill.teacher=t.ckpt: its classes .* differ from this run's"):
        student.attach_teacher(other_classes, "t.ckpt")
    normalised = small_module(compose_cfg, 64, data={"preprocess": {"scale": "cell"}})
    with pytest.raises(ConfigError, match=r"its preprocessing differs in \['scale'\]"):
        student.attach_teacher(normalised, "t.ckpt")
    bigger = small_module(compose_cfg, 64)  # input size alone may differ: the batch is resized
    student.attach_teacher(bigger, "t.ckpt")
    assert isinstance(student._teacher, FrozenTeacher) and student._teacher.image_size == 64


def test_distilled_run_from_the_real_config(compose_cfg, tmp_path):
    base = ["data=sample", "model=small_cnn", "test=false", "evaluate=false", "~logger.tensorboard", "trainer.max_epochs=1", *FAST]
    train(compose_cfg([*base, "data.image_size=48", f"paths.output_dir={tmp_path / 'teacher'}"]))
    teacher_ckpt = json.loads((tmp_path / "teacher" / "summary.json").read_text())["best_checkpoint"]
    out = tmp_path / "student"
    train(compose_cfg([*base, "data.image_size=32", "batch_augment=fourier", f"distill.teacher={teacher_ckpt}",
                       "distill.weight=0.5", f"paths.output_dir={out}"]))
    summary = json.loads((out / "summary.json").read_text())
    card = (out / "checkpoints" / "model_card.md").read_text()
    assert f"distilled from the teacher `{teacher_ckpt}`" in card and "weight 0.5" in card
    ckpt = read_checkpoint(summary["best_checkpoint"])
    assert ckpt["hyper_parameters"]["distill"]["teacher"] == teacher_ckpt  # provenance, as an absolute path
    teacher_keys = set(read_checkpoint(teacher_ckpt)["state_dict"])
    assert set(ckpt["state_dict"]) == teacher_keys  # the same architecture, and no teacher weights inside the student
    student = load_module(summary["best_checkpoint"])  # loads on its own: the teacher is not needed to use the student
    assert student.preprocessing.image_size == 32 and student._teacher is None
    with pytest.raises(CheckpointError, match=r"distill.teacher=.*missing.ckpt: no such checkpoint file"):
        train(compose_cfg([*base, f"distill.teacher={tmp_path / 'missing.ckpt'}", f"paths.output_dir={tmp_path / 'bad'}"]))
    assert not (tmp_path / "bad" / "checkpoints").exists()  # stopped before any data work or training
