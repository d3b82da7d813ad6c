"""Resume after an interrupted epoch and rerun with the same seed give identical results (CPU)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from bloodcell.checkpoint import read_checkpoint
from bloodcell.errors import BloodcellError
from bloodcell.reproducibility import SeededEpochSampler
from bloodcell.training import train
from tests.conftest import FAST

TINY = ["data=sample", "model=small_cnn", "test=false", "evaluate=false", "data.image_size=32", "~logger.tensorboard", *FAST]
CRASH = "+callbacks.crash._target_=tests.test_reliability.CrashAfterFirstEpoch"


class Interrupted(Exception):
    """Stands in for a killed job (power cut, wall-time limit) in the middle of epoch 1."""


class CrashAfterFirstEpoch(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise Interrupted("simulated kill after epoch 0")


def final_state(out_dir: Path) -> tuple[dict, dict]:
    ckpt = read_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    return ckpt["state_dict"], {"epoch": ckpt["epoch"], "global_step": ckpt["global_step"]}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_sampler_is_a_function_of_seed_and_epoch():
    s = SeededEpochSampler(50, seed=3)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(50))
    assert list(SeededEpochSampler(50, seed=3)) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first
    s.set_epoch(0)
    assert list(s) == first
    assert list(SeededEpochSampler(50, seed=4)) != first


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interruption_matches_uninterrupted_run(compose_cfg, tmp_path, workers):
    """2 epochs straight vs. killed after epoch 0 + `ckpt_path=last` in the same run dir: equal weights and metrics."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    tiny = [*TINY, f"data.num_workers={workers}"]
    cfg = compose_cfg([*tiny, "trainer.max_epochs=2", f"paths.output_dir={straight}"])
    ref = train(cfg)
    with pytest.raises(Exception, match="simulated kill after epoch 0"):  # (hydra imports a 2nd copy of this module)
        train(compose_cfg([*tiny, "trainer.max_epochs=2", CRASH, f"paths.output_dir={resumed}"]))
    assert read_checkpoint(resumed / "checkpoints" / "last.ckpt")["epoch"] == 0
    # without ckpt_path the existing checkpoints are protected
    with pytest.raises(BloodcellError, match="refusing to overwrite"):
        train(compose_cfg([*tiny, "trainer.max_epochs=2", f"paths.output_dir={resumed}"]))
    again = train(compose_cfg([*tiny, "trainer.max_epochs=2", "ckpt_path=last", f"paths.output_dir={resumed}"]))
    w_ref, meta_ref = final_state(straight)
    w_res, meta_res = final_state(resumed)
    assert meta_ref == meta_res
    assert_same_weights(w_ref, w_res)
    assert again == ref
    assert (resumed / "logs" / "metrics.before_resume.csv").is_file()  # epoch 0's log survives the resume


def test_same_seed_same_results_with_and_without_workers(compose_cfg, tmp_path):
    """One seed, augmentation on: reruns give bit-identical weights and metrics, with 0 or 2 loader workers."""
    results = {}
    for name, workers in (("a", 0), ("b", 0), ("w2", 2)):
        results[name] = train(
            compose_cfg([*TINY, "trainer.max_epochs=2", f"data.num_workers={workers}", f"paths.output_dir={tmp_path / name}"])
        )
    assert results["a"] == results["b"] == results["w2"]
    reference = final_state(tmp_path / "a")[0]
    assert_same_weights(reference, final_state(tmp_path / "b")[0])
    assert_same_weights(reference, final_state(tmp_path / "w2")[0])
