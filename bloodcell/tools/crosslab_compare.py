"""Does model B beat model A on a cross-lab folder? A paired test on the same images, not two overlapping intervals.

    python -m bloodcell.tools.crosslab_compare A/crosslab_zheng2_predictions.csv B/crosslab_zheng2_predictions.csv \
        [--names pipeline robust] [--resamples 2000] [--json compare.json]
Prints both models' accuracy and macro recall, B minus A with a 95 % paired bootstrap interval (stratified: each class
resampled within itself) and McNemar's exact p on accuracy. The CSVs are what `python evaluate.py ckpt=... crosslab=[DIR]`
writes for each folder. Image sampling only: a second training seed is the other half of the noise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> dict:
    """Parse the options, compare, print (and optionally write) the result."""
    from bloodcell.config import yaml_defaults
    from bloodcell.evaluation.crosslab import check_bootstrap, compare_predictions, format_comparison
    from bloodcell.evaluation.report import write_json

    default_resamples = yaml_defaults("evaluate.yaml", ["bootstrap"])["bootstrap"]
    parser = argparse.ArgumentParser(prog="python -m bloodcell.tools.crosslab_compare", description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="predictions CSV of model A (crosslab_<folder>_predictions.csv)")
    parser.add_argument("b", type=Path, help="predictions CSV of model B, same folder")
    parser.add_argument("--names", nargs=2, default=["A", "B"], help="what to call the two models")
    parser.add_argument("--resamples", type=int, default=default_resamples,
                        help=f"bootstrap resamples (default {default_resamples}, conf/evaluate.yaml bootstrap)")
    parser.add_argument("--json", type=Path, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    if check_bootstrap(args.resamples) == 0:
        parser.error("--resamples must be at least 1")
    result = compare_predictions(args.a, args.b, args.resamples) | {"names": list(args.names)}
    print(format_comparison(result, tuple(args.names)))
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
