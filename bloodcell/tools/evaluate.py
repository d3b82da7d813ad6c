"""Evaluate checkpoint(s) or predict a folder: python evaluate.py ckpt=PATH [data=folder data.root=DIR | predict_dir=DIR]"""
from __future__ import annotations

from omegaconf import DictConfig

from bloodcell.tools.cli import hydra_tool


@hydra_tool("evaluate")
def main(cfg: DictConfig) -> dict:
    """Metrics, report and pictures for one checkpoint or an ensemble (or predictions for predict_dir)."""
    from bloodcell.evaluation.runner import run

    return run(cfg)


if __name__ == "__main__":
    main()
