"""Helpers shared by the benchmark scripts: config composition, step timing, process-tree memory.

Memory is read from /proc (Linux): RSS counts shared pages (the memory-mapped image cache, torch
libraries) once per process, PSS splits them between the processes sharing them, so the sum of
PSS over the tree is the honest "how much RAM does this run take" figure.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from bloodcell.config import compose

ROOT = Path(__file__).resolve().parent.parent

# the timers' measurements, by label (StepTimer is built by Hydra from the config, so it reports here)
RESULTS: dict[str, dict] = {}


def compose_train_cfg(overrides: Sequence[str]) -> DictConfig:
    """The real training config (conf/train.yaml) with command-line style overrides."""
    return compose("train", overrides)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work, so wall-clock times cover the work they claim to."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Windows:
    """Steady-state img/s: per epoch, one window from the end of step `warmup` (first epoch) or `epoch_warmup` (later
    epochs) to the end of the epoch's last step, with one device synchronisation at each end and none inside;
    images and seconds summed over the windows. Epoch boundaries (loader restart, validation, checkpoints) fall
    outside, in both the plain loop and the framework, so ≥ 200 timed steps can span several short epochs.
    """

    def __init__(self, warmup: int, epoch_warmup: int, device: torch.device | str) -> None:
        self.warmup, self.epoch_warmup, self.device = int(warmup), int(epoch_warmup), device
        self.images, self.seconds, self.cpu_seconds, self.steps = 0, 0.0, 0.0, 0
        self._t0: float | None = None
        self._cpu0 = 0.0

    def after_step(self, index_in_epoch: int, epoch: int, images: int, last_in_epoch: bool) -> None:
        start = self.warmup if epoch == 0 else self.epoch_warmup
        done = index_in_epoch + 1
        if done == start and not last_in_epoch:
            synchronize(self.device)
            self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        elif done > start and self._t0 is not None:
            self.images += images  # a batch size: no device read
            self.steps += 1
            if last_in_epoch:
                synchronize(self.device)
                self.seconds += time.perf_counter() - self._t0
                self.cpu_seconds += time.process_time() - self._cpu0
                self._t0 = None

    def result(self) -> dict:
        return {**rates(self.images, self.seconds, self.cpu_seconds), "timed_steps": self.steps}


class StepTimer(L.Callback):
    """The framework side of `Windows`: the training loop's own steps, logging and progress bar included."""

    def __init__(self, warmup_steps: int, label: str, epoch_warmup: int = 2) -> None:
        self.warmup_steps, self.epoch_warmup, self.label = int(warmup_steps), int(epoch_warmup), label
        self.windows: Windows | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.windows is None:
            self.windows = Windows(self.warmup_steps, self.epoch_warmup, pl_module.device)
        last = batch_idx + 1 == trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step
        self.windows.after_step(batch_idx, trainer.current_epoch, int(batch[1].shape[0]), last)
        if last and self.windows.images:
            RESULTS[self.label] = self.windows.result()


def rates(images: int, seconds: float, cpu_seconds: float) -> dict:
    """img/s of wall time, and img per CPU-second of the training process (its threads, not the loader workers).

    On a shared, oversubscribed machine wall time mostly measures the neighbours; the training
    process's own CPU time measures the work it did, including any framework overhead.
    """
    return {"images": images, "seconds": seconds, "img_per_s": images / seconds, "cpu_seconds": cpu_seconds,
            "img_per_cpu_s": images / cpu_seconds}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _kib(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_mib(pid: int) -> dict[str, float]:
    """RSS and PSS summed over a process and all its descendants (DataLoader workers), in MiB."""
    pids = process_tree(pid)
    rss = sum(_kib(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids)
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": len(pids)}


class PeakMemory:
    """Context manager sampling the process tree's memory every `interval` s; keeps the peaks."""

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        import os

        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak = {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = tree_memory_mib(self.pid)
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class HostProfile:
    """cProfile of the host's Python over steady-state steps `start` … `start + steps - 1` (issue 13).

    On a GPU with no host-device sync, a small model's step is host-bound: the GPU waits for the host to queue
    kernels, so every millisecond of Python per step (hooks, logging, callbacks) shows in img/s. The same
    window in both paths says where the framework's extra host time goes.
    """

    def __init__(self, start: int, steps: int) -> None:
        self.start, self.steps, self.seen = int(start), int(steps), 0
        self.profiler = cProfile.Profile()
        self.seconds = 0.0
        self._t0: float | None = None

    def before_step(self) -> None:
        if self.seen == self.start:
            self._t0 = time.perf_counter()
            self.profiler.enable()

    def after_step(self) -> None:
        self.seen += 1
        if self.seen == self.start + self.steps and self._t0 is not None:
            self.profiler.disable()
            self.seconds = time.perf_counter() - self._t0

    def report(self, path: Path, title: str, top: int = 40) -> dict:
        """Top functions by own time into `path`; returns host ms per step (profiled, so slower than unprofiled)."""
        out = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        ms = 1000 * self.seconds / max(self.steps, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{title}: {self.steps} steps, {ms:.2f} ms per step (wall, profiled)\n\n{out.getvalue()}")
        return {"profiled_steps": self.steps, "profiled_ms_per_step": ms, "profile": str(path)}


PROFILES: dict[str, HostProfile] = {}


class HostProfileCallback(L.Callback):
    """`HostProfile` around the training loop's own steps (hooks, logging, callbacks included), kept in PROFILES[label]."""

    def __init__(self, label: str, start: int, steps: int) -> None:
        self.profile = PROFILES[label] = HostProfile(start, steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.profile.before_step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.profile.after_step()
