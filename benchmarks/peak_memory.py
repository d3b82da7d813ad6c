"""Peak memory of a command and all its child processes (DataLoader workers, DDP ranks).

    python benchmarks/peak_memory.py -- python train.py data=pbc128 trainer.limit_train_batches=20 ...

Prints peak RSS (shared pages counted once per process) and peak PSS (shared pages split between
the processes, i.e. what the run really costs in RAM), summed over the process tree.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import PeakMemory  # noqa: E402


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1:] if "--" in argv else argv
    if not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    proc = subprocess.Popen(cmd)
    with PeakMemory(pid=proc.pid, interval=0.1) as mem:
        rc = proc.wait()
    peak = {k: round(v, 1) for k, v in mem.peak.items()}
    print(f"peak memory of `{' '.join(cmd)}`: {json.dumps(peak)}  (exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
