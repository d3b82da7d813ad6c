"""Preview what the model sees: a PNG grid per class, originals beside augmented samples.

    python -m bloodcell.tools.preview augment=pipeline [data=pbc128] [--rows 2 --samples 7 --out DIR]
    python -m bloodcell.tools.preview augment=none batch_augment=pipeline data=pbc128     # the on-device pipeline

Arguments of the form key=value are Hydra overrides of conf/train.yaml (data defaults to the
committed sample when none is given). Writes DIR/preview.png and DIR/preview.json (what it shows).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> Path:
    """Compose the training config, build its data module and draw the training transform's grid."""
    from bloodcell.augment.gpu import build_batch_augment
    from bloodcell.augment.preview import preview_grid, save_preview, with_batch_ops
    from bloodcell.config import compose
    from bloodcell.errors import BloodcellError
    from bloodcell.reproducibility import seed_global_rngs
    from bloodcell.training import build_datamodule

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. augment=pipeline data=pbc128")
    parser.add_argument("--rows", type=int, default=2, help="original images per class")
    parser.add_argument("--samples", type=int, default=7, help="augmented draws beside each original")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/preview/<augment>_<time>)")
    args = parser.parse_args(argv)

    overrides = (
        args.overrides if any(o.split("=", 1)[0].lstrip("+~") == "data" for o in args.overrides) else ["data=sample", *args.overrides]
    )
    cfg = compose("train", [*overrides, "paths.output_dir=/tmp"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    transform = dm.train_transform
    transform = getattr(transform, "augmented", transform)  # JSD: show the augmented views
    cpu_repr = repr(transform)
    batch_ops = build_batch_augment(cfg.get("batch_augment"))
    transform = with_batch_ops(transform, batch_ops)
    name = str(cfg.augment.name) + (f"+{cfg.batch_augment.get('name', 'batch')}" if batch_ops is not None else "")
    out = args.out or Path(cfg.paths.root_dir) / "outputs" / "preview" / f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if (out / "preview.png").exists():
        raise BloodcellError(f"{out / 'preview.png'} exists; refusing to overwrite it. Pass another --out.")
    split = dm.splits["train"]
    seed_global_rngs(int(cfg.seed or 0))  # the batch ops draw from torch's and Python's global RNGs
    grid, picked = preview_grid(split.images(), split.labels, dm.classes, transform, args.rows, args.samples, int(cfg.seed or 0))
    info = {"augment": name, "overrides": args.overrides, "seed": cfg.seed, "source": dm.source.describe(), "transform": cpu_repr,
            "batch_augment": repr(batch_ops) if batch_ops is not None else None}
    png = save_preview(grid, picked, args.rows, dm.image_size, f"augment={name}: original | {args.samples} augmented samples", info, out)
    print(png)
    return png


if __name__ == "__main__":
    main()
