"""Callbacks that keep the training loop as fast as a hand-written one."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's rich bar, redrawn at most every `min_interval_s` seconds during training, showing `metrics`.

    Reading a metric turns it into a Python float, which on a GPU is a device synchronisation (the host
    stops queueing work). Lightning does that after *every* step for values logged with `prog_bar=True`,
    so the training loss is logged without it and this bar reads the `metrics` named here (their
    `_step`/`_epoch` forms when logged both ways) from the trainer's callback metrics only when it
    redraws: slow steps (CPU) still update every batch, fast ones (GPU) a few times a second.
    """

    def __init__(self, min_interval_s: float = 0.5, metrics: Sequence[str] = ("train/loss",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = float(min_interval_s)
        self.metrics = [str(m) for m in metrics]
        self._last_draw = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval_s or batch_idx + 1 >= self.total_train_batches:
            self._last_draw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        """Lightning's items plus the named metrics, read now (the bar is redrawing)."""
        items = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        for name in self.metrics:
            forms = [k for k in (f"{name}_step", f"{name}_epoch") if k in logged] or ([name] if name in logged else [])
            for key in forms:
                value = logged[key]
                items[key] = float(value) if getattr(value, "numel", lambda: 1)() == 1 else value
        return items
