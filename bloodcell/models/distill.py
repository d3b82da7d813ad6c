"""Knowledge distillation from a trained checkpoint: a frozen teacher labels each training batch as the student sees it.

Consistent teaching (Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", CVPR 2022):
the teacher scores the student's own augmented, mixed batch (resized to the teacher's input size), so the student
learns the teacher's function on the same off-manifold images, not fixed labels computed once on clean ones.
The use here: a 192 px GPU model (which transfers better to other labs) teaches a 96 px model that runs on a CPU.
The teacher is not part of the student's weights: the student's checkpoint stays a self-contained model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bloodcell.config import require_keys
from bloodcell.errors import ConfigError

DISTILL_KEYS = ("teacher", "weight", "temperature")  # conf/train.yaml distill.*
# preprocessing that only decides how finely pixels are resampled or stored; every other setting changes what the
# image shows (colour normalisation, magnification normaliser, context), so teacher and student must agree on it
RESAMPLING_ONLY = ("image_size", "resize_mode", "downsample", "reencode", "reencode_quality")


@dataclass(frozen=True)
class DistillSettings:
    """distill.* of conf/train.yaml: loss = (1 - weight) · task loss + weight · T² · KL(teacher ‖ student at T)."""

    teacher: str | None = None
    weight: float = 1.0
    temperature: float = 1.0

    @classmethod
    def from_cfg(cls, cfg: dict | None) -> DistillSettings:
        if not cfg or not cfg.get("teacher"):
            return cls()
        d = require_keys(cfg, DISTILL_KEYS, "distill")
        settings = cls(str(d["teacher"]), float(d["weight"]), float(d["temperature"]))
        if not 0.0 <= settings.weight <= 1.0:
            raise ConfigError(f"distill.weight={settings.weight}: use a value in [0, 1] (1 = the teacher alone, Beyer et al.).")
        if settings.temperature <= 0:
            raise ConfigError(f"distill.temperature={settings.temperature} must be > 0 (1 = the teacher's own probabilities).")
        return settings

    def combine(self, task_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        kd = distillation_loss(student_logits, teacher_logits, self.temperature)
        return kd if self.weight == 1.0 else (1.0 - self.weight) * task_loss + self.weight * kd


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch (Hinton et al. 2015; T² keeps the gradient scale)."""
    t = temperature
    log_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)


class FrozenTeacher:
    """A trained BloodCellModule in eval mode, fed the student's pixel batch at its own input size; never trained.

    Its own `preprocess` normalises the batch, so the teacher is fed exactly as evaluation feeds it. Deliberately not an
    nn.Module attribute of the student, so it stays out of the student's state_dict and optimiser.
    """

    def __init__(self, module: Any) -> None:
        self.module = module.eval().requires_grad_(False)
        self.image_size = int(module.hparams.image_size)

    @classmethod
    def from_module(cls, teacher: Any, classes: list[str], preprocessing: Any, source: str) -> FrozenTeacher:
        """Wrap a loaded BloodCellModule after checking it predicts the student's classes from the same kind of image."""
        if list(teacher.classes) != list(classes):
            raise ConfigError(f"distill.teacher={source}: its classes {list(teacher.classes)} differ from this run's {list(classes)} "
                              "(names and order must match); choose a teacher trained on the same classes.")
        mine, theirs = preprocessing.describe(), teacher.preprocessing.describe()
        differs = sorted(k for k in set(mine) | set(theirs) if k not in RESAMPLING_ONLY and mine.get(k) != theirs.get(k))
        if differs:
            raise ConfigError(f"distill.teacher={source}: its preprocessing differs in {differs} "
                              f"({ {k: theirs.get(k) for k in differs} } vs this run's { {k: mine.get(k) for k in differs} }); the teacher "
                              "sees the student's pixels, so train the student with the teacher's data.preprocess settings.")
        return cls(teacher)

    def to(self, device: torch.device | str) -> FrozenTeacher:
        self.module = self.module.to(device)
        return self

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a float 0-255 NCHW batch at any size (bilinear resize to the teacher's input size)."""
        x = pixels.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return self.module.model(self.module.preprocess(x)).float()
