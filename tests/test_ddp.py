"""DDP on CPU with trainer=ddp_cpu (2 processes, gloo): metrics are reduced across ranks.

Crafted case: rank 0 sees only images the model gets right, rank 1 only wrong ones; every rank must
report the global 0.5 (unreduced they would say 1.0 and 0.0). End to end (slow): `python train.py
trainer=ddp_cpu` through Hydra and Lightning's re-launch; its test metrics must equal a single-process
evaluation of the same checkpoint on the whole split, and rank 0 alone writes summary and evaluation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from bloodcell.checkpoint import load_module
from bloodcell.evaluation.inference import datamodule_for, predict_probs
from tests.conftest import ROOT


def _metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p, y = torch.from_numpy(probs), torch.from_numpy(labels)
    return {
        "acc": float(multiclass_accuracy(p, y, 8, average="micro")),
        "bal_acc": float(multiclass_accuracy(p, y, 8, average="macro")),
        "f1": float(multiclass_f1_score(p, y, 8, average="macro")),
    }


def test_ddp_cpu_crafted_ranks_report_global_metrics(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "tests/helpers/ddp_crafted.py", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert (ranks[0]["seen_right"], ranks[0]["seen_wrong"]) == (16, 0)  # the ranks really saw different data
    assert (ranks[1]["seen_right"], ranks[1]["seen_wrong"]) == (0, 16)
    for r in ranks:  # unreduced, rank 0 would say 1.0 and rank 1 0.0
        assert r["test/acc"] == pytest.approx(0.5) and r["test/bal_acc"] == pytest.approx(0.5)


@pytest.mark.slow
def test_ddp_cpu_metrics_are_reduced_across_ranks(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "train.py", "data=sample", "model=small_cnn", "trainer=ddp_cpu", "trainer.max_epochs=3",
        "data.batch_size=16", "data.num_workers=0", "logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 really ran
    summary = json.loads((run_dir / "summary.json").read_text())
    ddp = {k: summary["metrics"][f"test/{k}"] for k in ("acc", "bal_acc", "f1")}

    # single process, whole test split, same checkpoint, in the split's order
    module = load_module(summary["best_checkpoint"])
    dm, _ = datamodule_for(module, None, {"num_workers": 0})
    probs, labels = predict_probs(module, dm.predict_loader("test"), torch.device("cpu"))
    assert len(labels) % 2 == 0  # no DistributedSampler padding: both ranks see distinct halves
    full = _metrics(probs, labels)
    for k in ddp:
        assert ddp[k] == pytest.approx(full[k], abs=1e-5), (k, ddp, full)
    evaluation = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert evaluation["balanced_accuracy"] == pytest.approx(full["bal_acc"], abs=1e-5)
