"""The LightningModule: normalise on device → timm classifier → loss → torchmetrics.

Everything evaluation needs (class names, image size, normalisation, model config) is saved in
the checkpoint's hyper-parameters and under `checkpoint["bloodcell"]`.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bloodcell.augment.gpu import build_batch_augment
from bloodcell.config import check_trusted_targets, require_keys, to_plain
from bloodcell.data.datamodule import with_data_defaults
from bloodcell.data.preprocess import Preprocess
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models.consistency import ConsistencySettings, js_consistency, stack_views, views_as_batch
from bloodcell.models.distill import DistillSettings, FrozenTeacher
from bloodcell.models.finetune import FinetunePlan, split_model_cfg
from bloodcell.models.mixstyle import attach_mixstyle
from bloodcell.optim import check_optimizer_name, check_sam_fits_trainer, frozen_batchnorm_stats, sam_perturb, sam_restore, warmup_cosine

CHECKPOINT_FORMAT = 1
MIX_KEYS = ("mixup_alpha", "cutmix_alpha", "prob", "switch_prob", "mode", "label_smoothing", "off_last_epochs")  # conf/train.yaml mix.*


def build_model_from_cfg(model_cfg: dict, num_classes: int, **overrides: Any) -> torch.nn.Module:
    """Instantiate a model config; only bloodcell factories may be named (checkpoints can be untrusted)."""
    if "_target_" not in model_cfg:
        raise CheckpointError("the model config has no _target_ (a bloodcell model factory); compose it from conf/model/.")
    check_trusted_targets(model_cfg, "model config")
    build_cfg, _ = split_model_cfg(model_cfg)  # training options (freeze, ema, ...) are not factory arguments
    return instantiate({**build_cfg, **overrides}, num_classes=num_classes, _convert_="all")


def make_metrics(num_classes: int, prefix: str, validate_args: bool = True) -> MetricCollection:
    """acc = micro accuracy; bal_acc = mean per-class recall (balanced accuracy); f1 = macro F1.

    validate_args=False skips torchmetrics' input checks, which synchronise with the GPU on every update.
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=validate_args),
            "bal_acc": MulticlassAccuracy(num_classes, average="macro", validate_args=validate_args),
            "f1": MulticlassF1Score(num_classes, average="macro", validate_args=validate_args),
        },
        prefix=prefix,
    )


class BloodCellModule(L.LightningModule):
    """The LightningModule: uint8 batch → normalise on device → classifier → loss and metrics; checkpoints carry its preprocessing."""

    def __init__(
        self,
        model: dict,
        optim: dict,
        classes: list[str],
        image_size: int,
        loss: dict | None = None,
        mix: dict | None = None,
        class_weights: list[float] | None = None,
        data: dict | None = None,
        channels_last: bool = False,
        jsd: dict | None = None,
        batch_augment: dict | None = None,
        sam: dict | None = None,
        distill: dict | None = None,
        consistency: dict | None = None,
    ) -> None:
        super().__init__()
        model, optim, loss, mix, data = (to_plain(c) for c in (model, optim, loss, mix, data))
        self.save_hyperparameters(
            {"model": model, "optim": optim, "classes": list(classes), "image_size": int(image_size), "loss": loss or {},
             "mix": mix or {}, "class_weights": class_weights, "data": data or {}, "channels_last": channels_last,
             "batch_augment": to_plain(batch_augment), "sam": to_plain(sam) or {},
             "distill": to_plain(distill) or {}, "consistency": to_plain(consistency) or {}}
        )
        self.classes = list(classes)
        self.model = build_model_from_cfg(model, len(self.classes))
        attach_mixstyle(self.model, model.get("mixstyle"))  # training-time feature-style mixing (identity in eval)
        self.register_buffer("mean", torch.tensor(self.model.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(self.model.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        # no loss block (a hand-built module) means plain cross-entropy; otherwise conf/train.yaml's loss.* keys
        self.label_smoothing = float(require_keys(loss, ("label_smoothing",), "loss")["label_smoothing"]) if loss else 0.0
        self.mixer = self._build_mixer(mix or {})
        self.jsd_loss = self._build_jsd(jsd, weights)
        self.batch_augment = build_batch_augment(batch_augment)
        self.consistency = ConsistencySettings.from_cfg(to_plain(consistency))  # clean vs batch-augmented view (FACT/AugMix)
        self.consistency.check_fits(self.batch_augment is not None, self.jsd_loss is not None)
        # sharpness-aware minimisation (conf/train.yaml sam.rho; 0 = off): see optimizer_step
        self.sam_rho = float(require_keys(sam, ("rho",), "sam")["rho"]) if sam else 0.0
        if self.sam_rho < 0:
            raise ConfigError(f"sam.rho={self.sam_rho} must be ≥ 0 (0 = off; Foret et al. use 0.05).")
        self._sam_inputs: tuple | None = None  # the step's (inputs, labels, targets, teacher logits), for SAM's second pass
        self._sam_replay = False
        self.distill = DistillSettings.from_cfg(to_plain(distill))  # knowledge distillation (conf/train.yaml distill.*)
        self._teacher: FrozenTeacher | None = None  # attach_teacher (training.py); never part of this model's weights
        self.init_from: str | None = None  # set by train.py init_from=: the checkpoint a second-stage run started from
        n = len(self.classes)
        self.train_metrics = make_metrics(n, "train/", validate_args=False)  # labels come from our own cache
        self.val_metrics = make_metrics(n, "val/")
        self.test_metrics = make_metrics(n, "test/")
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # stage → this epoch's (top-1, target)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # -- pieces ---------------------------------------------------------------------------
    def _build_mixer(self, mix: dict):
        """timm Mixup (CutMix/MixUp with soft, smoothed targets) when mix.enabled; its settings come from conf/train.yaml."""
        if not mix.get("enabled"):
            return None
        from timm.data import Mixup

        m = require_keys(mix, MIX_KEYS, "mix")
        return Mixup(mixup_alpha=float(m["mixup_alpha"]), cutmix_alpha=float(m["cutmix_alpha"]), prob=float(m["prob"]),
                     switch_prob=float(m["switch_prob"]), mode=str(m["mode"]), label_smoothing=float(m["label_smoothing"]),
                     num_classes=len(self.classes))

    def _build_jsd(self, jsd: dict | None, class_weights: torch.Tensor | None):
        """timm JsdCrossEntropy (AugMix consistency) when the augment config's jsd is enabled.

        Batches then carry (clean, aug, aug) views stacked along channels (see augment.JsdViews).
        """
        if not jsd:
            return None
        if self.mixer is not None:
            raise ConfigError(
                "augment.jsd.enabled=true cannot be combined with mix.enabled=true (timm's JSD loss needs hard labels); switch one off."
            )
        if class_weights is not None:
            raise ConfigError("augment.jsd.enabled=true does not support data.balance=class_weights; use data.balance=oversample or none.")
        from timm.loss import JsdCrossEntropy

        alpha = require_keys(jsd, ("alpha",), "augment.jsd")["alpha"]
        return JsdCrossEntropy(num_splits=3, alpha=float(alpha), smoothing=self.label_smoothing)

    def mixing_active(self) -> bool:
        """Mixing runs except during the last `mix.off_last_epochs` epochs (clean fine-tuning at the end)."""
        if self.mixer is None:
            return False
        off = int(self.hparams.mix["off_last_epochs"])  # present: _build_mixer required it
        max_epochs = self.trainer.max_epochs if self._trainer is not None and self.trainer.max_epochs else None
        return not (off and max_epochs is not None and max_epochs > 0 and self.current_epoch >= max_epochs - off)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW (0–255) → float normalised with the backbone's own mean/std."""
        x = (x.float() - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a uint8 (raw pixels) or already-normalised float batch."""
        if x.dtype == torch.uint8:
            x = self.preprocess(x)
        return self.model(x)

    def loss_fn(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 2:  # soft targets from mixing (already smoothed by Mixup)
            logp = F.log_softmax(logits, dim=-1)
            if self.class_weights is not None:
                logp = logp * self.class_weights
            return -(target * logp).sum(dim=-1).mean()
        return F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=self.label_smoothing)

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self._sam_replay:  # SAM's second pass: the same augmented, mixed batch at the perturbed weights
            assert self._sam_inputs is not None
            x, y, target, teacher_logits = self._sam_inputs
            return self._loss(self.model(x), y, target, teacher_logits)
        x, y = batch
        if self.jsd_loss is not None:  # (clean, aug, aug) stacked on channels → one 3N batch
            x = torch.cat(x.split(3, dim=1))
        if self.consistency.weight:  # each image twice: as loaded and batch-augmented, mixed alike below
            x = stack_views(self.preprocess(x), self.preprocess(self.batch_augment(x)))
        else:  # on-device batch augmentation (batch_augment=...), training only
            x = self.preprocess(x if self.batch_augment is None else self.batch_augment(x))
        target = y
        if self.mixing_active() and x.shape[0] % 2 == 0:
            x, target = self.mixer(x, y)
        if self.consistency.weight:
            x, y, target = views_as_batch(x, y, target, self.hparams.channels_last)
        teaching = self._teacher is not None and self.distill.weight > 0  # weight 0: the task loss alone, no teacher pass
        teacher_logits = self._teacher.logits(x * self.std + self.mean) if teaching else None  # the same (mixed) pixels
        if self.sam_rho:
            self._sam_inputs = (x, y, target, teacher_logits)
        logits = self.model(x)
        loss = self._loss(logits, y, target, teacher_logits)
        if self.jsd_loss is not None:
            logits = logits[: y.shape[0]]  # metrics on the clean view
        # prog_bar=False: Lightning turns progress-bar values into Python floats after *every* step (a device sync);
        # the bar shows train/loss anyway, read only when it redraws (callbacks.ThrottledRichProgressBar.metrics)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=x.shape[0])
        if target.ndim == 1:
            self._remember("train", logits, y)
        return loss

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None = None):
        loss = self.jsd_loss(logits, y) if self.jsd_loss is not None else self.loss_fn(logits, target)
        loss = loss if teacher_logits is None else self.distill.combine(loss, logits, teacher_logits)
        if self.consistency.weight:  # a term of its own (kept at distill.weight=1); logits: clean views, then augmented
            loss = loss + self.consistency.weight * js_consistency(logits)
        return loss

    def attach_teacher(self, teacher: Any, source: str) -> None:
        """distill.teacher's loaded module (training.py loads it): checked, frozen, kept outside this model's state_dict."""
        self._teacher = FrozenTeacher.from_module(teacher, self.classes, self.preprocessing, source)

    def on_fit_start(self) -> None:
        if self.distill.teacher and self._teacher is None:
            raise ConfigError(f"distill.teacher={self.distill.teacher} is set but no teacher was attached (train.py attaches it).")
        if self._teacher is not None:
            self._teacher.to(self.device)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """With sam.rho > 0, sharpness-aware minimisation around the configured optimiser (Foret et al., ICLR 2021).

        Gradient at w (the usual training_step + backward), move to w + rho·g/‖g‖, gradient again on the same batch
        (BatchNorm statistics not counted twice), move back; the optimiser then steps from w with the second gradient.
        Two forward/backward passes per step: about twice the time.
        """
        if not self.sam_rho or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def sharpness_aware_closure():
            loss = optimizer_closure()
            originals = sam_perturb(params, self.sam_rho)
            self._sam_replay = True
            try:
                with frozen_batchnorm_stats(self.model):
                    optimizer_closure()
            finally:
                self._sam_replay, self._sam_inputs = False, None
                sam_restore(originals)
            return loss

        optimizer.step(closure=sharpness_aware_closure)

    # -- metrics: top-1 predictions stay on the device during an epoch, one torchmetrics update at its end ----------
    # (torchmetrics' update runs torch.bincount, which synchronises with the GPU; once per epoch instead of per step)
    def _remember(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        self._pending.setdefault(stage, []).append((logits.detach().argmax(dim=-1), y.detach()))

    def _epoch_metrics(self, stage: str, metrics: MetricCollection) -> dict | None:
        """The stage's metrics over this epoch's remembered predictions (None: none were made); clears them."""
        pending = self._pending.pop(stage, [])
        metrics.reset()
        if not pending:
            return None
        metrics.update(torch.cat([p for p, _ in pending]), torch.cat([t for _, t in pending]))
        values = metrics.compute()
        metrics.reset()
        return values

    def on_train_epoch_end(self) -> None:
        values = self._epoch_metrics("train", self.train_metrics)
        if values is not None:
            self.log_dict(values)

    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=stage == "val", batch_size=x.shape[0], sync_dist=True)
        self._remember(stage, logits, y)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_metrics("val", self.val_metrics)
        if values is not None:
            self.log_dict(values, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        values = self._epoch_metrics("test", self.test_metrics)
        if values is not None:
            self.log_dict(values)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=-1)

    # -- optimisation ---------------------------------------------------------------------
    def optimizer_params(self):
        """What the optimizer factory receives: the model (timm then skips decay on bias/norm), or, for
        staged fine-tuning / a lower backbone LR, one param group per backbone stage + the head."""
        plan = FinetunePlan.from_model_cfg(self.hparams.model)
        if not plan.needs_param_groups:
            return self.model
        opt = require_keys(self.hparams.optim.get("optimizer"), ("lr", "weight_decay"), "optim.optimizer")
        return plan.param_groups(self.model, lr=float(opt["lr"]), weight_decay=float(opt["weight_decay"]))

    def configure_optimizers(self):
        optim = self.hparams.optim
        opt_cfg = dict(optim.get("optimizer", {}))
        if "opt" not in opt_cfg:
            raise ConfigError("optim.optimizer.opt is missing; choose a config from conf/optim/ (adam, adamw, sgd, lion).")
        check_optimizer_name(str(opt_cfg["opt"]))
        optimizer = instantiate(opt_cfg, _partial_=True, _convert_="all")(self.optimizer_params())
        if self.sam_rho:
            check_sam_fits_trainer(self.sam_rho, self.trainer)
        sched = dict(optim.get("scheduler") or {})
        if not sched or require_keys(sched, ("name",), "optim.scheduler")["name"] in (None, "none"):
            return optimizer
        s = require_keys(sched, ("warmup_epochs", "min_lr_ratio", "warmup_start_ratio"), "optim.scheduler")
        total = int(self.trainer.estimated_stepping_batches)
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = int(round(float(s["warmup_epochs"]) * total / max_epochs))
        scheduler = warmup_cosine(optimizer, total, warmup, float(s["min_lr_ratio"]), float(s["warmup_start_ratio"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoint -----------------------------------------------------------------------
    @property
    def preprocessing(self) -> Preprocess:
        """How a decoded image becomes this model's input (size, resize mode, colour/scale normalisation).

        Read from the stored data config; keys a checkpoint predates come from conf/data/_common.yaml.
        """
        data = with_data_defaults(self.hparams.get("data"))
        return Preprocess.from_data_cfg(int(self.hparams.image_size), str(data["resize_mode"]), data["preprocess"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bloodcell"] = {
            "format": CHECKPOINT_FORMAT,
            "classes": self.classes,
            "image_size": int(self.hparams.image_size),
            "mean": list(self.model.mean),
            "std": list(self.model.std),
            "model": self.hparams.model,
            "data": self.hparams.data,
            "preprocess": self.preprocessing.describe(),
        }
        if self.init_from:
            checkpoint["bloodcell"]["init_from"] = self.init_from
