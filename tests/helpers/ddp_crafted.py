"""Run by tests/test_ddp.py in a subprocess: trainer=ddp_cpu tests a module on data where rank 0 is always
right and rank 1 always wrong, so reduced metrics (0.5) differ from either rank's own (1.0 / 0.0).

Images encode their label in the pixel value (label·10, +100 when the oracle must answer wrongly);
DistributedSampler(shuffle=False) gives rank r the indices r, r+2, ..., and odd indices are the wrong ones.
Usage: python tests/helpers/ddp_crafted.py OUT_DIR   (each rank writes OUT_DIR/rank<r>.json)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402

from bloodcell.config import compose  # noqa: E402
from bloodcell.data.dataset import CachedImageDataset  # noqa: E402
from bloodcell.module import BloodCellModule  # noqa: E402

N_CLASSES, PER_CLASS, SIZE = 8, 4, 16


class LabelOracle(nn.Module):
    """Reads the label back from pixel (0, 0); answers the next class when the 'wrong' flag (+100) is set."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen_right = self.seen_wrong = 0  # what this rank was given


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = torch.round(x[:, 0, 0, 0] * self.std[0, 0, 0, 0] + self.mean[0, 0, 0, 0]).long()
        label = (raw % 100) // 10
        wrong = raw >= 100
        self.seen_wrong += int(wrong.sum())
        self.seen_right += int((~wrong).sum())
        pred = torch.where(wrong, (label + 1) % N_CLASSES, label)
        return nn.functional.one_hot(pred, N_CLASSES).float() * 10 + self.dummy


def crafted_dataset() -> CachedImageDataset:
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    wrong = np.arange(len(labels)) % 2 == 1  # odd indices → rank 1
    values = labels * 10 + wrong * 100
    images = np.broadcast_to(values[:, None, None, None], (len(labels), SIZE, SIZE, 3)).astype(np.uint8).copy()
    return CachedImageDataset(images, labels)


def main(out_dir: Path) -> None:
    cfg = compose("train", ["trainer=ddp_cpu", "model=small_cnn", "paths.output_dir=" + str(out_dir)])
    module = BloodCellModule(model=cfg.model, optim=cfg.optim, classes=[str(i) for i in range(N_CLASSES)], image_size=SIZE)
    module.model = LabelOracle(module.mean, module.std)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False)
    loader = DataLoader(crafted_dataset(), batch_size=4, shuffle=False)
    (results,) = trainer.test(module, dataloaders=loader, verbose=False)
    oracle = module.model
    (out_dir / f"rank{trainer.global_rank}.json").write_text(
        json.dumps({**results, "world_size": trainer.world_size, "seen_right": oracle.seen_right, "seen_wrong": oracle.seen_wrong})
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
