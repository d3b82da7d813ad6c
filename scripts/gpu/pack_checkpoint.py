"""Bring a checkpoint back from the GPU machine (issue 13): weights + what `bloodcell.checkpoint.load_module` needs.

Files come back from the device at most 16 MB each, 8 in all; a Lite0 checkpoint is ~77 MB with its optimizer state
and the raw (non-EMA) weights kept for resuming. Evaluation needs only `state_dict` (the EMA weights), the
hyper-parameters and the bloodcell metadata (~19 MB), written here in parts of at most 15 MB, exact (fp32):
    python scripts/gpu/pack_checkpoint.py RUN/checkpoints/best-epochNNN.ckpt OUT/NAME.ckpt    # OUT/NAME.ckpt.part0, ...
    cat NAME.ckpt.part* > NAME.ckpt; python evaluate.py ckpt=NAME.ckpt ...                      # here
With --also-last, the run's last checkpoint (`last.ckpt` beside the given one) comes back too, as NAME_last.ckpt.part*:
the kept (best-validation) checkpoint can predate a recipe's clean last epochs, and scoring both shows which to keep.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

KEEP = ("epoch", "global_step", "state_dict", "hyper_parameters", "bloodcell")


def pack(ckpt: Path, out: Path, part_bytes: int = 15 * 2**20) -> list[Path]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    buffer = io.BytesIO()
    torch.save({k: state[k] for k in KEEP if k in state}, buffer)
    data = buffer.getvalue()
    parts = []
    for i in range(0, len(data), part_bytes):
        part = out.with_name(f"{out.name}.part{i // part_bytes}")
        part.write_bytes(data[i : i + part_bytes])
        parts.append(part)
    print(f"{ckpt} → {len(parts)} part(s) of {out}, {len(data) / 2**20:.1f} MiB")
    return parts


def last_beside(ckpt: Path) -> Path:
    """The run's last.ckpt (conf/callbacks `last_checkpoint`, written after every epoch) in the kept checkpoint's folder."""
    last = ckpt.with_name("last.ckpt")
    if not last.is_file():
        raise SystemExit(f"--also-last: no {last} beside {ckpt} (the run's callbacks.last_checkpoint writes it after every epoch)")
    return last


def last_name(out: Path) -> Path:
    """NAME.ckpt → NAME_last.ckpt (its parts: NAME_last.ckpt.part0, ...)."""
    return out.with_name(f"{out.stem}_last{out.suffix}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--also-last", action="store_true", help="also pack last.ckpt beside CKPT, as OUT's stem + _last.ckpt")
    args = parser.parse_args()
    pack(args.ckpt, args.out)
    if args.also_last:
        pack(last_beside(args.ckpt), last_name(args.out))
