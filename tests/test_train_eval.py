"""End to end on the committed real sample: fast_dev_run train → checkpoint → evaluate (CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bloodcell.checkpoint import load_module, read_checkpoint
from bloodcell.errors import BloodcellError, CheckpointError
from bloodcell.evaluation.runner import evaluate_checkpoint
from bloodcell.training import train
from tests.conftest import FAST, ROOT, SAMPLE


def test_fast_dev_run_train_then_evaluate(compose_cfg, tmp_path):
    cfg = compose_cfg(["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", *FAST])
    train(cfg)
    out = Path(cfg.paths.output_dir)
    summary = json.loads((out / "summary.json").read_text())
    ckpt = summary["best_checkpoint"]
    assert Path(ckpt).is_file()
    meta = read_checkpoint(ckpt)["bloodcell"]
    assert meta["classes"][3] == "immature_granulocyte" and meta["image_size"] == 96 and len(meta["mean"]) == 3
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class"} <= set(metrics)
    assert metrics["n"] == 32 and (out / "eval" / "confusion_matrix.png").stat().st_size > 1000
    # evaluate on another source (the whole sample folder) with the checkpoint's preprocessing
    ext = evaluate_checkpoint(
        ckpt,
        {
            "_target_": "bloodcell.data.BloodCellDataModule",
            "source": {"_target_": "bloodcell.data.FolderSource", "root": str(SAMPLE)},
            "cache_dir": str(tmp_path / "c"),
            "num_workers": 0,
            "image_size": 32,
        },
        "auto",
        tmp_path / "ev",
    )
    assert ext["n"] == 240 and ext["image_size"] == 96 and ext["split"] == "all"
    # the loaded module reproduces the module's predictions
    module = load_module(ckpt)
    x = torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8)
    assert module(x).shape == (2, 8)


def test_short_real_training_learns(compose_cfg):
    """4 short epochs of the small CNN on 176 real images beat chance (12.5 %) on the validation split."""
    cfg = compose_cfg(
        ["data=sample", "model=small_cnn", "trainer.max_epochs=4", "data.batch_size=16", "evaluate=false", "test=false", *FAST]
    )
    result = train(cfg)
    assert result is not None and result > 0.2


def test_refuses_to_overwrite_checkpoints(compose_cfg):
    cfg = compose_cfg(["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", *FAST])
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "mine.ckpt").write_bytes(b"precious")
    with pytest.raises(BloodcellError, match="refusing to overwrite"):
        train(cfg)
    assert (ckpts / "mine.ckpt").read_bytes() == b"precious"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        read_checkpoint(junk)
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a bloodcell checkpoint"):
        read_checkpoint(tmp_path / "foreign.ckpt")


def test_cli_user_error_is_one_line(tmp_path):
    """A bad data.root through the real train.py: exit 2, one clear line, no traceback."""
    res = subprocess.run(
        [sys.executable, "train.py", "data=folder", f"data.root={tmp_path}/nope", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    assert "error: data.root=" in res.stderr and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_average_probs_weighted():
    import numpy as np

    from bloodcell.evaluation.metrics import average_probs

    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(average_probs([a, b]), [[0.5, 0.5]])
    np.testing.assert_allclose(average_probs([a, b], [3, 1]), [[0.75, 0.25]])
    with pytest.raises(ValueError):
        average_probs([a, b], [1])
