"""`init_from=CKPT`: a new run that starts from a trained checkpoint's weights (e.g. a FixRes fine-tune at a larger size)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bloodcell.checkpoint import read_checkpoint
from bloodcell.errors import CheckpointError
from bloodcell.training import train
from tests.conftest import FAST

TINY = ["data=sample", "model=small_cnn", "test=false", "evaluate=false", "data.image_size=32", "~logger.tensorboard", *FAST]
# lr 0 and no weight decay: the optimiser leaves every parameter where the run started (BatchNorm statistics still move)
FROZEN_OPTIM = ["optim.optimizer.lr=0.0", "optim.optimizer.weight_decay=0.0", "trainer.max_epochs=1"]


def parameters(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """The network's trainable tensors (BatchNorm running statistics left out: they move in any training step)."""
    state = read_checkpoint(ckpt_path)["state_dict"]
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.fixture
def trained(compose_cfg, tmp_path) -> Path:
    """One tiny trained checkpoint at 32 px."""
    out = tmp_path / "first"
    train(compose_cfg([*TINY, "trainer.max_epochs=1", f"paths.output_dir={out}"]))
    return out / "checkpoints" / "last.ckpt"


def test_second_stage_starts_from_the_checkpoint_weights_at_another_size(compose_cfg, tmp_path, trained):
    start = parameters(trained)
    fresh, second = tmp_path / "fresh", tmp_path / "second"
    train(compose_cfg([*TINY, *FROZEN_OPTIM, "data.image_size=48", f"init_from={trained}", f"paths.output_dir={second}"]))
    train(compose_cfg([*TINY, *FROZEN_OPTIM, "data.image_size=48", f"paths.output_dir={fresh}"]))
    after = parameters(second / "checkpoints" / "last.ckpt")
    assert after.keys() == start.keys()
    for k in start:
        assert torch.equal(after[k], start[k]), f"{k} did not start from init_from's weights"
    # the check can fail: the same run without init_from keeps its own (fresh) initial weights
    assert any(not torch.equal(parameters(fresh / "checkpoints" / "last.ckpt")[k], start[k]) for k in start)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["init_from"] == str(trained.resolve())
    assert f"the trained checkpoint `{trained.resolve()}`" in (second / "checkpoints" / "model_card.md").read_text()
    saved = read_checkpoint(second / "checkpoints" / "last.ckpt")
    assert saved["hyper_parameters"]["image_size"] == 48
    assert saved["bloodcell"]["init_from"] == str(trained.resolve())  # provenance in the checkpoint itself
    assert "init_from" not in read_checkpoint(fresh / "checkpoints" / "last.ckpt")["bloodcell"]
    from bloodcell.evaluation.inference import load_members

    (member,) = load_members([second / "checkpoints" / "last.ckpt"])
    assert member.describe()["init_from"] == str(trained.resolve())  # evaluate.py's metrics.json names it per member


def altered_copy(src: Path, dst: Path, change) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_init_from_errors_name_the_problem(compose_cfg, tmp_path, trained):
    cfg = [*TINY, "trainer.max_epochs=1"]
    with pytest.raises(CheckpointError, match=r"init_from=.*nope.ckpt: no such checkpoint file"):
        train(compose_cfg([*cfg, f"init_from={tmp_path / 'nope.ckpt'}"]))

    def swap_classes(ckpt: dict) -> None:
        classes = ckpt["hyper_parameters"]["classes"]
        classes[0], classes[1] = classes[1], classes[0]

    swapped = altered_copy(trained, tmp_path / "swapped.ckpt", swap_classes)
    with pytest.raises(CheckpointError, match=r"trained on classes \['eosinophil', 'basophil'.*this run has \['basophil', 'eosinophil'"):
        train(compose_cfg([*cfg, f"init_from={swapped}", f"paths.output_dir={tmp_path / 'a'}"]))
    other_net = altered_copy(trained, tmp_path / "other_net.ckpt", lambda c: c["hyper_parameters"]["model"].update(backbone="resnet50"))
    with pytest.raises(CheckpointError, match=r"its network is resnet50, this run's model is bloodcell_small_cnn"):
        train(compose_cfg([*cfg, f"init_from={other_net}", f"paths.output_dir={tmp_path / 'b'}"]))
    with pytest.raises(CheckpointError, match=r"its weights do not fit this run's model .*keep the checkpoint's model.head"):
        train(compose_cfg([*cfg, f"init_from={trained}", "model.head.hidden=[16]", f"paths.output_dir={tmp_path / 'c'}"]))


def test_a_second_stage_resumes_with_its_own_command(compose_cfg, tmp_path, trained):
    """The README's resume recipe (same command + ckpt_path=last) works for an init_from run and keeps its provenance."""
    out = tmp_path / "second"
    stage = [*TINY, "data.image_size=48", f"init_from={trained}", f"paths.output_dir={out}"]
    train(compose_cfg([*stage, "trainer.max_epochs=1"]))
    train(compose_cfg([*stage, "trainer.max_epochs=2", "ckpt_path=last"]))
    last = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and last["bloodcell"]["init_from"] == str(trained.resolve())
    assert json.loads((out / "summary.json").read_text())["init_from"] == str(trained.resolve())
