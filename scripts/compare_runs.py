"""Compare two training runs (e.g. uninterrupted vs interrupted+resumed): final weights and summary metrics.

python scripts/compare_runs.py RUN_DIR_A RUN_DIR_B   → prints max |Δweight|, metric differences; exit 1 if not identical.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bloodcell.checkpoint import read_checkpoint


def main(a: Path, b: Path) -> int:
    ca, cb = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (a, b))
    print(f"epoch/global_step: {ca['epoch']}/{ca['global_step']} vs {cb['epoch']}/{cb['global_step']}")
    max_diff = max(float((ca["state_dict"][k].double() - cb["state_dict"][k].double()).abs().max()) if ca["state_dict"][k].numel() else 0.0
                   for k in ca["state_dict"])
    print(f"max |weight difference| over {len(ca['state_dict'])} tensors: {max_diff:.3e}")
    ma, mb = (json.loads((d / "summary.json").read_text())["metrics"] for d in (a, b))
    differing = {k: (ma[k], mb.get(k)) for k in ma if ma[k] != mb.get(k)}
    for k in sorted(ma):
        if "/" in k and not k.startswith("lr-"):
            print(f"{k:>20}: {ma[k]:.6f}  {mb.get(k, float('nan')):.6f}")
    identical = max_diff == 0.0 and not differing and ca["global_step"] == cb["global_step"]
    print("IDENTICAL" if identical else f"DIFFERENT: {sorted(differing)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
