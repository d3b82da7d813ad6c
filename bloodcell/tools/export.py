"""Export checkpoint(s) as one portable model: python export.py ckpt=PATH format=onnx|torchscript [out=FILE]"""
from __future__ import annotations

from omegaconf import DictConfig

from bloodcell.tools.cli import hydra_tool


@hydra_tool("export")
def main(cfg: DictConfig) -> dict:
    """ONNX or TorchScript file with the model's normalisation and softmax inside, metadata and a parity check."""
    from bloodcell.evaluation.export import run_export

    return run_export(cfg)


if __name__ == "__main__":
    main()
