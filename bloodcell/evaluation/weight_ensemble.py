"""Writing weight-space ensembles of one model's checkpoints (WiSE-FT, SWA; the arithmetic: models/weight_space.py),
optionally with BatchNorm statistics re-estimated on the checkpoint's own training images (needs its data)."""
from __future__ import annotations

from pathlib import Path

from bloodcell.errors import ConfigError


def with_reestimated_batchnorm(ckpt: dict, n_images: int, name: str, seed: int = 0) -> dict:
    """`ckpt` with the BatchNorm statistics its members disagreed on recomputed on up to `n_images` of the checkpoint's
    own training split (clean, evaluation preprocessing): the statistics must describe the averaged weights' features."""
    import torch

    from bloodcell.checkpoint import module_from_checkpoint
    from bloodcell.evaluation.inference import datamodule_for
    from bloodcell.models.weight_space import reestimate_batchnorm

    layers = ckpt["bloodcell"]["weight_ensemble"]["batchnorm_differs"]
    if not layers:
        return ckpt
    module = module_from_checkpoint(ckpt, name)
    dm, _ = datamodule_for(module, None, {})
    train = dm.dataset("train", dm.eval_transform)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n_images]  # every class, not the first files
    # batches of 64: the batch means the measured rows averaged (docs/results/crosslab)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train, order.tolist()), batch_size=64, num_workers=0)
    seen = reestimate_batchnorm(module, (batch[0] for batch in loader), layers)
    meta = {**ckpt["bloodcell"]["weight_ensemble"], "batchnorm_reestimated_on": {"split": "train", "images": seen, "seed": seed}}
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return {**ckpt, "state_dict": state, "bloodcell": {**ckpt["bloodcell"], "weight_ensemble": meta}}


def write_weight_ensemble(ckpts: list[str], weights: list[float] | None, out: str | Path, overwrite: bool = False,
                          bn_images: int = 0) -> Path:
    """Write the weight-space ensemble of `ckpts` to `out` (BatchNorm statistics re-estimated on `bn_images` training
    images when > 0); an existing file is kept unless `overwrite`."""
    import torch

    from bloodcell.checkpoint import weight_space_ensemble

    out = Path(out).expanduser()
    if bn_images < 0:
        raise ConfigError(f"bn_images={bn_images}: give the number of training images (0 keeps the averaged statistics).")
    if out.exists() and not overwrite:
        raise ConfigError(f"out={out} exists; choose another path or pass overwrite=true to replace it.")
    if out.resolve() in {Path(c).expanduser().resolve() for c in ckpts}:
        raise ConfigError(f"out={out} is one of the input checkpoints; write the ensemble to a new file.")
    ckpt = weight_space_ensemble(list(ckpts), weights)
    if bn_images > 0:
        ckpt = with_reestimated_batchnorm(ckpt, bn_images, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)  # never a half-written checkpoint at `out`
    return out
