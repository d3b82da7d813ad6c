"""What each preprocessing setting does to the same images: one row per image, one column per setting.

    python -m bloodcell.tools.preprocess_grid ../shared/data/pbc128 ../shared/data/crosslab/zheng2 --out grid.png \
        [--per-folder 4] [--size 96] [--variants none colour=white_balance colour=reinhard colour=macenko scale=cell ...]
A variant is `+`-joined `data.preprocess` keys (e.g. `scale=cell+context=suppress`); `none` is plain resizing.
Use it to check a normaliser on your own lab's images before training with it (Macenko, for one, fails on
single-cell crops: docs/results/crosslab/).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from bloodcell.tools.cli import argparse_tool

DEFAULT_VARIANTS = ["none", "colour=white_balance", "colour=reinhard", "colour=macenko", "scale=cell", "scale=cell+context=suppress"]


@argparse_tool
def main(argv: list[str] | None = None) -> Path:
    """Parse the options, preprocess a seeded pick of images from each folder every way asked, draw the grid."""
    import yaml

    from bloodcell.config import yaml_defaults
    from bloodcell.data.images import read_image
    from bloodcell.data.preprocess import Preprocess
    from bloodcell.data.sources import FolderSource
    from bloodcell.errors import ConfigError
    from bloodcell.evaluation.report import plot_image_grid

    parser = argparse.ArgumentParser(prog="python -m bloodcell.tools.preprocess_grid", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of class sub-folders")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--per-folder", type=int, default=4, help="images per folder (different classes first)")
    parser.add_argument("--size", type=int, default=96, help="data.image_size")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="columns: + joined data.preprocess key=value")
    parser.add_argument("--seed", type=int, default=0, help="which images are picked")
    args = parser.parse_args(argv)

    base = yaml_defaults("data/_common.yaml", ["preprocess"])["preprocess"]
    settings = []
    for variant in args.variants:
        keys = dict(base)
        for item in ([] if variant == "none" else variant.split("+")):
            key, sep, value = item.partition("=")
            if not sep or key not in base:
                raise ConfigError(f"--variants {variant!r}: {item!r} is not key=value with a data.preprocess key ({', '.join(base)}).")
            keys[key] = yaml.safe_load(value)
        settings.append(Preprocess.from_data_cfg(args.size, "center_crop", keys))

    rows, captions, labels = [], [], []
    rng = random.Random(args.seed)
    for folder in args.folders:
        by_class: dict[str, list[Path]] = {}
        for path, cls in FolderSource(str(folder)).list_files():
            by_class.setdefault(cls, []).append(path)
        classes = sorted(by_class)
        rng.shuffle(classes)
        for k in range(args.per_folder):
            cls = classes[k % len(classes)]
            path = rng.choice(by_class[cls])
            img = read_image(path)
            rows.append([p(img) for p in settings])
            captions.append([("" if captions else v, None) for v in args.variants])  # column names over the first row only
            labels.append(f"{folder.name}\n{cls[:12]}")
    png = plot_image_grid(rows, captions, labels, args.out, f"data.preprocess at {args.size} px: one image per row")
    print(png)
    return png


if __name__ == "__main__":
    main()
