"""The same cross-lab images predicted by two models, side by side in one picture.

    python -m bloodcell.tools.crosslab_grid BEFORE/crosslab_zheng2_predictions.csv AFTER/crosslab_zheng2_predictions.csv \
        --out grid.png [--per-class 6] [--names baseline robust]
The CSVs are what `python evaluate.py ckpt=... crosslab=[DIR]` writes for each folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> Path:
    """Parse the options and draw the before/after grid."""
    from bloodcell.evaluation.crosslab import before_after_grid

    parser = argparse.ArgumentParser(prog="python -m bloodcell.tools.crosslab_grid", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="predictions CSV of the first model (crosslab_<folder>_predictions.csv)")
    parser.add_argument("after", type=Path, help="predictions CSV of the second model, same folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--per-class", type=int, default=6, help="images per class row (changed predictions first)")
    parser.add_argument("--names", nargs=2, default=["before", "after"], help="what to call the two models")
    args = parser.parse_args(argv)
    png = before_after_grid(args.before, args.after, args.out, args.per_class, tuple(args.names))
    print(png)
    return png


if __name__ == "__main__":
    main()
