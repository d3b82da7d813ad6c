"""Staged fine-tuning: head on a frozen backbone first, then the last N backbone stages at a lower LR.

Stages are timm's own coarse parameter groups (`model.group_matcher(coarse=True)` through
`timm.models.group_parameters`: stem, one group per block stage, final conv), so "the last 2 stages"
means the same thing for every architecture without counting layers by hand.

Every parameter is in the optimizer from the start (one param group per stage, with its own LR),
so the step-wise LambdaLR built at configure time covers them all; freezing only toggles
`requires_grad`. Frozen parameters keep `grad=None`, which torch/timm optimizers skip entirely:
no weight decay, no momentum, no Adam moments until they are unfrozen. timm's `freeze()` helper is
not used because it swaps BatchNorm layers for FrozenBatchNorm2d, whose affine tensors are buffers,
which would leave the optimizer holding stale tensors after unfreezing.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import lightning as L
from timm.models import group_parameters
from torch import nn

from bloodcell.config import to_plain
from bloodcell.errors import ConfigError

log = logging.getLogger(__name__)

# Model-config keys that steer training, not the network; build_classifier never sees them.
TRAINING_KEYS = ("freeze", "freeze_epochs", "unfreeze_stages", "backbone_lr_scale", "layer_decay", "freeze_bn", "ema", "mixstyle")


def split_model_cfg(model_cfg: dict) -> tuple[dict, dict]:
    """(arguments for the model factory, training options) from one model config."""
    build = {k: v for k, v in model_cfg.items() if k not in TRAINING_KEYS}
    return build, {k: model_cfg[k] for k in TRAINING_KEYS if k in model_cfg}


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of each backbone stage, input side first (timm coarse group_matcher)."""
    if not hasattr(backbone, "group_matcher"):
        raise ConfigError(
            f"{type(backbone).__name__} has no timm group_matcher, so its stages are unknown; staged fine-tuning needs a timm backbone."
        )
    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    return [list(names) for _, names in sorted(groups.items())]


@contextlib.contextmanager
def all_trainable(module: nn.Module) -> Iterator[None]:
    """Temporarily mark every parameter trainable (timm's grouping helpers skip frozen ones)."""
    before = {p: p.requires_grad for p in module.parameters()}
    module.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)


def decay_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float, name: str) -> list[dict]:
    """timm's weight-decay rule (none on biases and 1-D norm/scale tensors), with an explicit LR.

    The LR is written into the group itself because the LambdaLR schedule scales each group's own
    initial LR (timm's `lr_scale` key is only read by timm schedulers).
    """
    decay, no_decay = [], []
    for param_name, p in named:
        (no_decay if p.ndim <= 1 or param_name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr, "name": name}] if decay else []
    return groups + ([{"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": f"{name}.no_wd"}] if no_decay else [])


@dataclass(frozen=True)
class FinetunePlan:
    """The model.* keys of staged fine-tuning (see conf/model/_common.yaml)."""

    freeze: bool = False  # phase 1: only the head trains, on a frozen backbone
    freeze_epochs: int = 0  # E1: epochs of phase 1; phase 2 lasts the remaining trainer.max_epochs
    unfreeze_stages: int = -1  # phase 2 trains the last N backbone stages (-1: all, 0: none)
    backbone_lr_scale: float = 1.0  # backbone LR = optim LR × this; the head keeps the optim LR
    layer_decay: float | None = None  # stage k below the top gets LR × layer_decay**k in addition
    freeze_bn: bool = False  # backbone BatchNorm layers keep their (pretrained) running statistics

    @classmethod
    def from_model_cfg(cls, model_cfg: dict | None) -> FinetunePlan:
        opts = {f.name: (model_cfg or {})[f.name] for f in fields(cls) if (model_cfg or {}).get(f.name) is not None}
        plan = cls(**opts)
        if plan.freeze and plan.freeze_epochs < 1:
            raise ConfigError(f"model.freeze=true needs model.freeze_epochs >= 1 (got {plan.freeze_epochs}).")
        if plan.unfreeze_stages < -1:
            raise ConfigError(f"model.unfreeze_stages={plan.unfreeze_stages}: use -1 (all stages), 0 (head only) or N > 0.")
        if plan.backbone_lr_scale <= 0 or (plan.layer_decay is not None and not 0 < plan.layer_decay <= 1):
            raise ConfigError("model.backbone_lr_scale must be > 0 and model.layer_decay in (0, 1] or null.")
        return plan

    @property
    def needs_callback(self) -> bool:
        """Whether anything is frozen at any time (otherwise training is plain end-to-end)."""
        return self.freeze or self.unfreeze_stages != -1 or self.freeze_bn

    @property
    def needs_param_groups(self) -> bool:
        return self.needs_callback or self.backbone_lr_scale != 1.0 or self.layer_decay is not None

    def phase(self, epoch: int) -> int:
        return 1 if self.freeze and epoch < self.freeze_epochs else 2

    def trainable_stage_indices(self, n_stages: int, epoch: int) -> range:
        if self.phase(epoch) == 1 or self.unfreeze_stages == 0:
            return range(0)
        first = 0 if self.unfreeze_stages == -1 else max(0, n_stages - self.unfreeze_stages)
        return range(first, n_stages)

    def stage_lr_scale(self, index: int, n_stages: int) -> float:
        return self.backbone_lr_scale * (self.layer_decay ** (n_stages - 1 - index) if self.layer_decay else 1.0)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """One LR per backbone stage plus the head, every parameter included whatever is frozen now."""
        with all_trainable(model):
            stages = backbone_stages(model.backbone)
            named = dict(model.backbone.named_parameters())
            groups: list[dict] = []
            for i, names in enumerate(stages):
                groups += decay_groups(
                    ((n, named[n]) for n in names), weight_decay, lr * self.stage_lr_scale(i, len(stages)), f"backbone.stage{i}"
                )
            groups += decay_groups(model.head.named_parameters(), weight_decay, lr, "head")
        n_grouped = sum(len(g["params"]) for g in groups)
        if n_grouped != len(list(model.parameters())):
            raise ConfigError(
                f"staged fine-tuning grouped {n_grouped} of {len(list(model.parameters()))} parameters; the model must be backbone + head."
            )
        return groups

    def apply(self, model: nn.Module, epoch: int) -> int:
        """Set requires_grad and train/eval modes for `epoch`; returns the phase (call after model.train())."""
        stages = backbone_stages(model.backbone)
        trainable = {n for i in self.trainable_stage_indices(len(stages), epoch) for n in stages[i]}
        for name, p in model.backbone.named_parameters():
            p.requires_grad_(name in trainable)
        model.head.requires_grad_(True)
        model.backbone.train()
        for module in model.backbone.modules():
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()  # frozen weights: frozen statistics and no dropout/drop-path either
            elif self.freeze_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self.phase(epoch)


class StagedFinetuning(L.Callback):
    """Applies a FinetunePlan at the start of every training epoch (and on resume)."""

    def __init__(self, plan: FinetunePlan) -> None:
        self.plan = plan
        self.phase: int | None = None

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        phase = self.plan.apply(pl_module.model, trainer.current_epoch)
        if phase != self.phase:
            n_train = sum(p.numel() for p in pl_module.model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in pl_module.model.parameters())
            log.info("fine-tuning phase %d from epoch %d: %d of %d parameters trainable", phase, trainer.current_epoch, n_train, n_all)
            self.phase = phase

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.plan.freeze and trainer.max_epochs is not None and 0 < trainer.max_epochs <= self.plan.freeze_epochs:
            log.warning(
                "trainer.max_epochs=%d <= model.freeze_epochs=%d: the backbone is never unfrozen (head-only training).",
                trainer.max_epochs,
                self.plan.freeze_epochs,
            )
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module)
        pl_module.log("finetune/phase", float(self.phase or 0), on_step=False, on_epoch=True)


def model_callbacks(model_cfg: Any) -> list[L.Callback]:
    """Callbacks the model config asks for: staged fine-tuning and/or EMA of the weights."""
    from bloodcell.models.ema import ema_callback

    cfg = to_plain(model_cfg) or {}
    callbacks: list[L.Callback] = []
    plan = FinetunePlan.from_model_cfg(cfg)
    if plan.needs_callback:
        callbacks.append(StagedFinetuning(plan))
    ema = ema_callback(cfg.get("ema"))
    if ema is not None:
        callbacks.append(ema)
    return callbacks
