"""Does model B beat model A on a cross-lab folder? A paired test on the same images, not two overlapping intervals.

    python -m bloodcell.tools.crosslab_compare A/crosslab_zheng2_predictions.csv B/crosslab_zheng2_predictions.csv \
        [C/crosslab_zheng2_predictions.csv ...] [--names pipeline robust ...] [--resamples 2000] [--json compare.json]
For each model after the first (the reference A): both models' accuracy and macro recall, B minus A with a 95 % paired
bootstrap interval (stratified: each class resampled within itself) and McNemar's exact p on accuracy; several models
come as one markdown table. The CSVs are what `python evaluate.py ckpt=... crosslab=[DIR]` writes for each folder.
Image sampling only: a second training seed is the other half of the noise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> dict:
    """Parse the options, compare every model with the reference, print (and optionally write) the results."""
    from bloodcell.config import yaml_defaults
    from bloodcell.evaluation.crosslab import compare_predictions, comparison_table, format_comparison
    from bloodcell.evaluation.metrics import check_bootstrap
    from bloodcell.evaluation.report import write_json

    default_resamples = yaml_defaults("evaluate.yaml", ["bootstrap"])["bootstrap"]
    parser = argparse.ArgumentParser(prog="python -m bloodcell.tools.crosslab_compare", description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="predictions CSV of model A (crosslab_<folder>_predictions.csv)")
    parser.add_argument("others", type=Path, nargs="+", help="predictions CSV(s) of the model(s) compared with A, same folder")
    parser.add_argument("--names", nargs="+", help="what to call the models, A first (default: A, B, C, ...)")
    parser.add_argument("--resamples", type=int, default=default_resamples,
                        help=f"bootstrap resamples (default {default_resamples}, conf/evaluate.yaml bootstrap)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    names = args.names or [chr(ord("A") + i) if i < 26 else f"model {i}" for i in range(len(args.others) + 1)]
    if len(names) != len(args.others) + 1:
        parser.error(f"--names gives {len(names)} names for {len(args.others) + 1} CSVs")
    if check_bootstrap(args.resamples) == 0:
        parser.error("--resamples must be at least 100: a comparison needs its interval")
    results = [compare_predictions(args.reference, other, args.resamples) | {"names": [names[0], name]}
               for other, name in zip(args.others, names[1:])]
    print(format_comparison(results[0], tuple(results[0]["names"])) if len(results) == 1 else "\n".join(comparison_table(results)))
    out = {"reference": str(args.reference), "comparisons": results}
    if args.json:
        write_json(out, args.json)
    return out


if __name__ == "__main__":
    main()
