"""Average checkpoints in weight space: python -m bloodcell.tools.weight_ensemble "ckpts=[a.ckpt,b.ckpt]" out=c.ckpt

See conf/weight_ensemble.yaml; the work: bloodcell/evaluation/weight_ensemble.py and bloodcell/models/weight_space.py
(why: WiSE-FT between the head-only and the fine-tuned model of one staged run; SWA over its last epochs).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from bloodcell.errors import ConfigError
from bloodcell.tools.cli import hydra_tool


@hydra_tool("weight_ensemble")
def main(cfg: DictConfig) -> str:
    """Write `out` from `ckpts` and `weights`; returns the path written."""
    from bloodcell.evaluation.weight_ensemble import write_weight_ensemble

    ckpts = cfg.ckpts
    if isinstance(ckpts, str) or not OmegaConf.is_list(ckpts):
        raise ConfigError('ckpts must be a list of two or more checkpoints, e.g. "ckpts=[a.ckpt,b.ckpt]".')
    weights = None if cfg.weights is None else list(cfg.weights)
    out = write_weight_ensemble(list(ckpts), weights, cfg.out, bool(cfg.overwrite), int(cfg.bn_images))
    print(f"wrote {out} (weights {weights or 'equal'} over {len(ckpts)} checkpoints)")
    return str(out)


if __name__ == "__main__":
    main()
