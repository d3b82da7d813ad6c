"""Train a blood-cell classifier: python train.py [model=effnet_b6 optim=adam ...] | -m optim=adam,sgd,lion"""
from __future__ import annotations

from omegaconf import DictConfig

from bloodcell.tools.cli import hydra_tool


@hydra_tool("train")
def main(cfg: DictConfig) -> float | None:
    """Fit, test and evaluate one configuration; the return value is what sweepers optimise."""
    from bloodcell.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
