"""Preview what the model sees: a PNG grid per class, originals beside augmented samples.

    python -m bloodcell.augment.preview augment=pipeline [data=pbc128] [--rows 2 --samples 7 --out DIR]

Arguments of the form key=value are Hydra overrides of conf/train.yaml (data defaults to the
committed sample when none is given). Writes DIR/preview.png and DIR/preview.json (what it shows).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bloodcell.cli import user_errors_exit
from bloodcell.errors import BloodcellError

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_train_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import bloodcell  # noqa: F401  (registers resolvers)

    if not any(o.split("=", 1)[0].lstrip("+~") == "data" for o in overrides):
        overrides = ["data=sample", *overrides]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, "paths.output_dir=/tmp"])


def preview_grid(images: np.ndarray, labels: np.ndarray, classes: list[str], transform, rows: int, samples: int,
                 seed: int) -> tuple[np.ndarray, list[dict]]:
    """Grid (uint8 RGB): per class `rows` rows of [original | `samples` augmented draws], a gap after each original."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]
    gap = 4
    tiles, picked = [], []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, min(rows, len(idx)), replace=False) if len(idx) else []
        for i in chosen:
            original = np.asarray(images[i])
            row = [original, np.full((h, gap, 3), 255, np.uint8)]
            row += [transform(image=original.copy())["image"] if transform is not None else original for _ in range(samples)]
            tiles.append(np.concatenate(row, axis=1))
            picked.append({"class": name, "index": int(i)})
    if not tiles:
        raise BloodcellError("no images to preview: the chosen data's training split is empty.")
    return np.concatenate(tiles, axis=0), picked


def save_preview(grid: np.ndarray, picked: list[dict], rows_per_class: int, tile: int, title: str, info: dict, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "preview.png"
    dpi = 100
    fig = plt.figure(figsize=(grid.shape[1] / dpi + 2.0, grid.shape[0] / dpi + 0.5), dpi=dpi)
    ax = fig.add_axes((1.9 / (grid.shape[1] / dpi + 2.0), 0.0, grid.shape[1] / dpi / (grid.shape[1] / dpi + 2.0), grid.shape[0] / (grid.shape[0] + 50)))
    ax.imshow(grid, interpolation="nearest")
    centres = [(k + 0.5) * tile for k in range(len(picked))]
    ax.set_yticks(centres[::rows_per_class] if rows_per_class else centres, [p["class"] for p in picked][::rows_per_class])
    ax.set_xticks([tile / 2], ["original"])
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    (out_dir / "preview.json").write_text(json.dumps({**info, "images": picked}, indent=1))
    return png


@user_errors_exit
def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. augment=pipeline data=pbc128")
    parser.add_argument("--rows", type=int, default=2, help="original images per class")
    parser.add_argument("--samples", type=int, default=7, help="augmented draws beside each original")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/preview/<augment>_<time>)")
    args = parser.parse_args(argv)

    from bloodcell.training import build_datamodule

    cfg = compose_train_cfg(args.overrides)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    transform = dm.train_transform
    transform = getattr(transform, "augmented", transform)  # JSD: show the augmented views
    name = str(cfg.augment.get("name", "augment"))
    out = args.out or Path(cfg.paths.root_dir) / "outputs" / "preview" / f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    if (out / "preview.png").exists():
        raise BloodcellError(f"{out / 'preview.png'} exists; refusing to overwrite it. Pass another --out.")
    split = dm.splits["train"]
    grid, picked = preview_grid(split.images(), split.labels, dm.classes, transform, args.rows, args.samples, int(cfg.seed or 0))
    info = {"augment": name, "overrides": args.overrides, "seed": cfg.seed, "source": dm.source.describe(), "transform": repr(transform)}
    png = save_preview(grid, picked, args.rows, dm.image_size, f"augment={name}: original | {args.samples} augmented samples", info, out)
    print(png)
    return png


if __name__ == "__main__":
    main()
