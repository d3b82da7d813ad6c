"""Average checkpoints in weight space: python -m bloodcell.tools.weight_ensemble "ckpts=[a.ckpt,b.ckpt]" out=c.ckpt

See conf/weight_ensemble.yaml and bloodcell/models/weight_space.py (why: WiSE-FT between the head-only and the
fine-tuned model of one staged run).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bloodcell.errors import ConfigError
from bloodcell.tools.cli import hydra_tool


def write_weight_ensemble(ckpts: list[str], weights: list[float] | None, out: str | Path, overwrite: bool = False) -> Path:
    """Write the weight-space ensemble of `ckpts` to `out`; an existing file is kept unless `overwrite`."""
    import torch

    from bloodcell.checkpoint import weight_space_ensemble

    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise ConfigError(f"out={out} exists; choose another path or pass overwrite=true to replace it.")
    if out.resolve() in {Path(c).expanduser().resolve() for c in ckpts}:
        raise ConfigError(f"out={out} is one of the input checkpoints; write the ensemble to a new file.")
    ckpt = weight_space_ensemble(list(ckpts), weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)  # never a half-written checkpoint at `out`
    return out


@hydra_tool("weight_ensemble")
def main(cfg: DictConfig) -> str:
    """Write `out` from `ckpts` and `weights`; returns the path written."""
    ckpts = cfg.ckpts
    if isinstance(ckpts, str) or not OmegaConf.is_list(ckpts):
        raise ConfigError('ckpts must be a list of two or more checkpoints, e.g. "ckpts=[a.ckpt,b.ckpt]".')
    weights = None if cfg.weights is None else list(cfg.weights)
    out = write_weight_ensemble(list(ckpts), weights, cfg.out, bool(cfg.overwrite))
    print(f"wrote {out} (weights {weights or 'equal'} over {len(ckpts)} checkpoints)")
    return str(out)


if __name__ == "__main__":
    main()
