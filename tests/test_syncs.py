"""No host-device synchronisation inside a training step (issue 13): the CPU-testable proxy for torch's GPU sync debug mode.

A sync per step (an `.item()`, a `bool(tensor)`, a progress-bar value turned into a float, a torchmetrics
update running `torch.bincount`) makes the host wait for the GPU every step, which is what made the
Lightning path 0.70–0.86 of a hand-written loop on an H200. `benchmarks.syncs.SyncCounter` sees those
calls at the dispatcher on the CPU; these tests train the real config with it.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from benchmarks.syncs import SyncCounter, run
from bloodcell.augment.gpu import build_batch_augment
from bloodcell.module import BloodCellModule

STEPS = 4
QUIET = ["data=sample", "model=small_cnn", "data.num_workers=0", "data.batch_size=8", "trainer.accelerator=cpu",
         "trainer.enable_model_summary=false", "callbacks.progress_bar.min_interval_s=3600", "logger=csv"]


def middle_steps(overrides: list[str], tmp_path) -> list[list[tuple[str, str]]]:
    """The sync calls of each steady-state step (the first step's one-off reads and the last step's epoch end excluded)."""
    steps = run([*QUIET, f"paths.cache_dir={tmp_path / 'cache'}", *overrides], STEPS)
    assert len(steps) == STEPS
    return steps[1:-1]


def test_sync_counter_catches_what_it_claims():
    x = torch.arange(6.0)
    with SyncCounter() as counter:
        x.sum().item()
        bool(x.any())
        float(x[0])
        x[x > 2]
        x.cpu()
        x.tolist()
        MulticlassAccuracy(3, validate_args=False).update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        torch.tensor([5.0, 3.0, 1.0], device=x.device)  # on a GPU: a blocking host→device copy every step
    found = [what for what, _ in counter.calls]
    assert found.count("_local_scalar_dense") == 3
    assert {"index[bool mask]", "Tensor.cpu", "Tensor.tolist", "bincount"} <= set(found)
    assert found.count("lift_fresh[torch.tensor from host data]") == 3  # the two label tensors and the constant
    assert all(where.startswith(__file__) or "torchmetrics" in where for _, where in counter.calls)
    assert torch.Tensor.cpu.__name__ == "cpu"  # the patched methods are restored


def test_optimizer_step_counters_are_allowed():
    """torch's Adam reads its step counter with .item(), but that counter is a CPU tensor on every device."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(3)
    with SyncCounter() as counter:
        opt.step()
    assert counter.calls == []


def test_training_steps_do_not_synchronise(tmp_path):
    """Steady-state steps of the real config, with the on-device pipeline, EMA, label smoothing, logging and the bar."""
    steps = middle_steps(["batch_augment=pipeline", "model.ema.enabled=true", "loss.label_smoothing=0.1"], tmp_path)
    assert steps == [[], []], steps


def test_training_steps_with_mixing_do_not_synchronise(tmp_path):
    steps = middle_steps(["mix.enabled=true", "augment=none", "batch_augment=basic"], tmp_path)
    assert steps == [[], []], steps


def test_the_check_fails_if_a_per_step_sync_comes_back(tmp_path, monkeypatch):
    """The old per-step code paths (torchmetrics update every step, loss logged with prog_bar=True) are caught."""
    remember = BloodCellModule._remember

    def per_step_update(self, stage, logits, y):
        if stage != "train":
            return remember(self, stage, logits, y)
        self.train_metrics.update(logits, y)

    monkeypatch.setattr(BloodCellModule, "_remember", per_step_update)
    log = L.LightningModule.log
    monkeypatch.setattr(BloodCellModule, "log", lambda self, name, value, **kw: log(self, name, value, **{**kw, "prog_bar": True}))
    steps = middle_steps([], tmp_path)
    found = {(what, where.rsplit("/", 3)[-3]) for step in steps for what, where in step}
    assert ("bincount", "torchmetrics") in found  # the metrics update
    assert any(what == "_local_scalar_dense" and "lightning" in where for step in steps for what, where in step)  # the bar value


@pytest.mark.parametrize("name", ["basic", "pipeline", "randconv", "fourier"])
def test_batch_pipelines_do_not_synchronise(compose_cfg, name):
    aug = build_batch_augment(compose_cfg([f"batch_augment={name}"]).batch_augment)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    with SyncCounter() as counter:
        aug(x)
    assert counter.calls == []


def test_throughput_benchmark_writes_host_profiles_of_both_paths(tmp_path):
    """`--profile-steps`: the same steady steps profiled in the plain loop and in the Lightning path, one table each."""
    from benchmarks.train_throughput import main

    (result,) = main(["--models", "small_cnn", "--steps", "6", "--warmup", "2", "--repeats", "1", "--profile-steps", "3",
                      "--json", str(tmp_path / "t.json"), *QUIET, f"paths.cache_dir={tmp_path / 'cache'}"])
    for path in ("plain", "framework"):
        profile = result["host_profile"][path]
        assert profile["profiled_steps"] == 3 and profile["profiled_ms_per_step"] > 0
        text = Path(profile["profile"]).read_text()
        assert "ms per step" in text and "tottime" in text
    assert "training_step" in Path(result["host_profile"]["framework"]["profile"]).read_text()  # the framework's own code
