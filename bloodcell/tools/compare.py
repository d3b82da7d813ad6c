"""Same-budget comparison of augment configs: clean test split vs shifted test images.

    python -m bloodcell.tools.compare --out DIR [--augments none heavy pipeline] [--shifted DIR ...] \
        [--] data=pbc128 trainer.max_epochs=10 ...

Trains one model per augment config with identical overrides and seed (train.py in a subprocess), then
evaluates every best checkpoint on its clean test split and on each shifted set (see
bloodcell/evaluation/compare.py). Writes DIR/compare.json and DIR/compare.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the options, run the comparison, print its table."""
    from bloodcell.evaluation.compare import compare_augments, format_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="comparison folder (runs, shifted set, compare.json)")
    parser.add_argument("--augments", nargs="+", default=["none", "heavy", "pipeline"])
    parser.add_argument("--shifted", type=Path, nargs="*", default=[], help="extra shifted sets (data=folder layout)")
    parser.add_argument("--no-own-shift", action="store_true", help="do not build the seeded lab-shift copy of the test split")
    parser.add_argument("--shift-seed", type=int, default=1234)
    parser.add_argument("overrides", nargs="*", help="train.py overrides shared by every run (data=pbc128 trainer.max_epochs=...)")
    args = parser.parse_args(argv)
    rows = compare_augments(args.out, args.augments, args.overrides, args.shifted, not args.no_own_shift, args.shift_seed)
    print("\n" + format_table(rows))
    print(f"\nwrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")
    return rows


if __name__ == "__main__":
    main()
