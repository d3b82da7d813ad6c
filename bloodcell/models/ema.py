"""EMA of the weights (model.ema.enabled) through Lightning's WeightAveraging callback.

Lightning swaps the averaged weights in for validation, writes them as the checkpoint's
`state_dict` (the raw weights go to `current_model_state` for resuming) and copies them into the
model when training ends, so checkpoint selection, testing and evaluate.py all see EMA weights.
Added here: a warm-up of the decay, (1 + n) / (10 + n) capped at `decay`, so that the average is
useful after a few hundred steps of a short CPU run instead of staying near the initial weights.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from bloodcell.config import require_keys
from bloodcell.errors import ConfigError


def ema_decay(decay: float, n_averaged: int, warmup: bool) -> float:
    """The decay used for the update after `n_averaged` earlier updates."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged)) if warmup else decay


class EMAWeights(WeightAveraging):
    """Exponential moving average of parameters and BatchNorm statistics, updated after every optimizer step."""

    def __init__(self, decay: float, warmup: bool, device: str | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"model.ema.decay={decay} must be in (0, 1), e.g. 0.999.")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self._update)

    @torch.no_grad()
    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor | int) -> None:
        if not averaged[0].is_floating_point():  # counters such as num_batches_tracked: keep the latest
            torch._foreach_copy_(averaged, current)
            return
        weight = 1.0 - ema_decay(self.decay, int(n_averaged), self.warmup)
        torch._foreach_lerp_(averaged, current, weight)

    def on_train_start(self, trainer, pl_module) -> None:
        self._host_count: int | None = None  # read from the (possibly restored) averaged model at the first update

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Update the average after each optimizer step, with the update count kept on the host.

        Lightning's WeightAveraging calls `AveragedModel.update_parameters`, which reads `n_averaged` from the
        device twice per step (`bool(n_averaged == 0)`, `if n_averaged > 0`), and the decay warm-up needs it
        as a number: three device synchronisations per step on a GPU. Here it is read once per fit.
        """
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._ema_step(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def _ema_step(self, pl_module) -> None:
        model = self._average_model
        if getattr(self, "_host_count", None) is None:
            self._host_count = int(model.n_averaged)
        averaged = [t.detach() for t in itertools.chain(model.module.parameters(), model.module.buffers())]
        current = [t.detach().to(a.device) for t, a in zip(itertools.chain(pl_module.parameters(), pl_module.buffers()), averaged)]
        if self._host_count == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [i for i, a in enumerate(averaged) if a.is_floating_point()]
            others = [i for i, a in enumerate(averaged) if not a.is_floating_point()]
            for group in (floats, others):
                if group:
                    self._update([averaged[i] for i in group], [current[i] for i in group], self._host_count)
        model.n_averaged += 1
        self._host_count += 1

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Restore the raw weights only to resume fitting.

        Lightning's WeightAveraging reloads `current_model_state` (the raw weights) into the model on
        every load once it has an averaged model, so `trainer.test(ckpt_path=best)` after `fit` would
        test the raw weights; testing, validating and predicting must see the EMA `state_dict`.
        """
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)


def ema_callback(cfg: dict[str, Any] | None) -> EMAWeights | None:
    """EMAWeights from the model.ema config block, or None when disabled."""
    if not cfg or not cfg.get("enabled"):
        return None
    opts = require_keys(cfg, ("decay", "warmup"), "model.ema")  # defaults: conf/model/_common.yaml
    return EMAWeights(decay=float(opts["decay"]), warmup=bool(opts["warmup"]), device=cfg.get("device"))
