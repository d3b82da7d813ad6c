"""Callbacks that keep the training loop as fast as a hand-written one."""
from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's rich bar, redrawn at most every `min_interval_s` seconds during training.

    Lightning's bar reads the logged metrics after every batch; reading turns them into Python
    floats, which on a GPU is a device synchronisation per step (the host stops queueing work) plus
    a terminal redraw. Slow steps (CPU) still update every batch; fast ones (GPU) a few times a second.
    """

    def __init__(self, min_interval_s: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = float(min_interval_s)
        self._last_draw = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval_s or batch_idx + 1 >= self.total_train_batches:
            self._last_draw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
