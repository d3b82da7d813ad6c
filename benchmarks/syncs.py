"""Host-device synchronisations per training step, found on the CPU (a GPU is not needed to see them).

    python benchmarks/syncs.py [--steps 6] [--profile] [hydra overrides, e.g. batch_augment=pipeline model=small_cnn]

On a GPU, a step that reads a device value (`.item()`, `float(t)`, `if t.any()`, boolean-mask indexing,
`torch.bincount`, `.cpu()`, `.tolist()`) makes the host wait until all queued work is done, so the host's
per-step overhead (Lightning hooks, logging, Python) stops overlapping the GPU's work. torch's
`torch.cuda.set_sync_debug_mode` reports such calls but needs a GPU. `SyncCounter` finds the same calls
on the CPU, at the dispatcher: `aten._local_scalar_dense` (what item/bool/int/float call), ops whose
output size depends on values (nonzero, masked_select, unique, bincount, bool-mask index), `equal`,
plus the Python methods `.cpu()`, `.tolist()`, `.numpy()`. Reads in `torch/optim/optimizer.py` are allowed: the
optimizers' step counters are CPU tensors on every device. `SyncWindow` counts per training step,
from one `on_train_batch_start` to the next (logging, callbacks and the progress bar included).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

VALUE_READS = {"_local_scalar_dense", "equal", "is_nonzero"}
VALUE_SHAPED = {"nonzero", "masked_select", "bincount", "_unique2", "unique_dim", "unique_consecutive", "_unique"}
HOST_COPIES = ("cpu", "tolist", "numpy")
# torch.tensor(python data, device=cuda) inside a step is a blocking host→device copy of pageable memory; on the CPU the
# same call shows as lift_fresh (found on an H100 with --cuda: three batch ops did this every step, invisible here before)
HOST_TENSORS = {"lift_fresh", "lift_fresh_copy"}
# the loader builds host tensors (datasets, collate): in workers on a GPU run, in the main process when num_workers=0
HOST_SIDE = ("/bloodcell/data/", "/lightning/pytorch/utilities/combined_loader.py")
ALLOWED = ("/torch/optim/optimizer.py",)  # _get_value: optimizer step counters are CPU tensors on every device
_SKIP = ("/torch/", "/benchmarks/syncs.py", "/lightning_utilities/")


def _caller() -> str:
    """file:line of the innermost frame outside torch (the code that asked for the value), or an allowed torch frame."""
    stack = traceback.extract_stack()[:-2]
    for frame in reversed(stack):
        if any(a in frame.filename for a in ALLOWED):
            return f"{frame.filename}:{frame.lineno}"
        if not any(s in frame.filename for s in _SKIP):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


class SyncCounter(TorchDispatchMode):
    """Records every call that would synchronise host and device on a GPU: (what, where) in `calls`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self._saved: dict[str, object] = {}

    def _record(self, what: str, exempt: tuple[str, ...] = ()) -> None:
        where = _caller()
        if not any(a in where for a in (*ALLOWED, *exempt)):
            self.calls.append((what, where))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in VALUE_READS or name in VALUE_SHAPED:
            self._record(name)
        elif name in HOST_TENSORS:
            self._record(f"{name}[torch.tensor from host data]", exempt=HOST_SIDE)
        elif name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
                self._record(f"{name}[bool mask]")
        elif name == "repeat_interleave" and isinstance(args[0] if args else None, torch.Tensor):
            if func._overloadname.startswith("Tensor") and (kwargs or {}).get("output_size") is None:
                self._record("repeat_interleave[tensor repeats]")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in HOST_COPIES:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def wrapper(tensor, *a, __name=name, __original=original, **k):
                self._record(f"Tensor.{__name}")
                return __original(tensor, *a, **k)

            setattr(torch.Tensor, name, wrapper)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)


class SyncWindow(L.Callback):
    """Counts SyncCounter calls per training step (one list per step in `steps`), from each step's start to the next's."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[str, str]]] = []
        self._counter: SyncCounter | None = None

    def _close(self) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.steps.append(self._counter.calls)
            self._counter = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._close()
        self._counter = SyncCounter()
        self._counter.__enter__()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()


class CudaSyncWindow(SyncWindow):
    """On a GPU: torch's own check, `torch.cuda.set_sync_debug_mode("warn")`, per training step (its warnings recorded)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._close()
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _close(self) -> None:
        if getattr(self, "_catcher", None) is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._catcher.__exit__(None, None, None)
            self.steps.append([("cuda sync", f"{w.filename}:{w.lineno}: {str(w.message)[:80]}") for w in self._caught])
            self._catcher = None


def run(overrides: list[str], steps: int, cuda: bool = False) -> list[list[tuple[str, str]]]:
    """Train `steps` steps of the composed config (logging every 1000 steps, bar redraw throttled) inside a SyncWindow."""
    from omegaconf import OmegaConf

    import bloodcell.training as training
    from bloodcell.config import compose

    window = CudaSyncWindow() if cuda else SyncWindow()
    with tempfile.TemporaryDirectory(prefix="bloodcell-syncs-") as out:
        cfg = compose("train", [f"paths.output_dir={out}", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
                                "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1000", "test=false", "evaluate=false",
                                *overrides])
        OmegaConf.update(cfg, "callbacks.sync_window", {"_target_": "benchmarks.syncs.SyncWindow"}, force_add=True)
        original = training.instantiate_group

        def instantiate_group(group):
            built = original(group)
            return [window if type(c).__name__ == "SyncWindow" else c for c in built]  # also when run as __main__

        training.instantiate_group = instantiate_group
        try:
            training.train(cfg)
        finally:
            training.instantiate_group = original
    return window.steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--profile", action="store_true", help="also profile the run with torch.profiler (CPU)")
    parser.add_argument("--cuda", action="store_true", help="on a GPU: count with torch.cuda.set_sync_debug_mode instead")
    args, overrides = parser.parse_known_args(argv)
    overrides = overrides or ["data=sample", "model=small_cnn", "data.num_workers=0"]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps = run(overrides, args.steps, args.cuda)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    else:
        steps = run(overrides, args.steps, args.cuda)
    for i, calls in enumerate(steps):
        print(f"step {i}: {len(calls)} sync(s)")
        for (what, where), n in collections.Counter(calls).most_common():
            print(f"    {n:3d} × {what:28s} {where}")


if __name__ == "__main__":
    main()
