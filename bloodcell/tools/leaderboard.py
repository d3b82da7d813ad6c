"""Turn a Hydra multirun folder into a leaderboard: CSV + markdown + JSON + PNG (see bloodcell/sweeps/leaderboard.py).

    python -m bloodcell.tools.leaderboard multirun/<task>/<date>_<time>   (or multirun/<task>: its newest sweep)
"""
from __future__ import annotations

import argparse
import logging

from bloodcell.tools.cli import argparse_tool


@argparse_tool
def main(argv: list[str] | None = None) -> dict:
    """Parse the options, write the leaderboard files, print the markdown table."""
    from bloodcell.sweeps.leaderboard import summarize

    parser = argparse.ArgumentParser(prog="python -m bloodcell.tools.leaderboard", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="multirun folder (multirun/<task>/<date>_<time>), or multirun/<task> for its newest sweep")
    parser.add_argument("--metric", default=None, help="rank by this logged metric (default: the runs' monitor, val/bal_acc)")
    parser.add_argument("--out", default=None, help="write the leaderboard files here instead of into the sweep folder")
    parser.add_argument("--ensemble-top", type=int, default=0, metavar="K",
                        help="also print the evaluate.py command that ensembles the best K checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = summarize(args.sweep, args.metric, args.out, args.ensemble_top)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


if __name__ == "__main__":
    main()
