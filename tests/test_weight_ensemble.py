"""Weight-space ensembles (WiSE-FT): the arithmetic on crafted state dicts, real checkpoints of one model
combined into a checkpoint that loads and predicts like any other, and clear refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bloodcell.checkpoint import load_module, read_checkpoint, weight_space_ensemble
from bloodcell.config import compose
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models.weight_space import convex_weights, interpolate_state_dicts
from bloodcell.tools.weight_ensemble import write_weight_ensemble
from bloodcell.training import train
from tests.conftest import FAST, ROOT


def test_interpolation_is_the_weighted_mean_of_floats_and_keeps_the_last_integer_buffers():
    a = {"w": torch.tensor([0.0, 4.0]), "bn.num_batches_tracked": torch.tensor(3), "h": torch.ones(2, dtype=torch.float16)}
    b = {"w": torch.tensor([8.0, 0.0]), "bn.num_batches_tracked": torch.tensor(7), "h": torch.zeros(2, dtype=torch.float16)}
    out = interpolate_state_dicts([a, b], convex_weights([1, 3], 2))
    assert torch.equal(out["w"], torch.tensor([6.0, 1.0]))
    assert out["bn.num_batches_tracked"].item() == 7 and out["h"].dtype == torch.float16
    assert torch.equal(out["h"], torch.full((2,), 0.25, dtype=torch.float16))
    assert convex_weights(None, 4) == [0.25] * 4


@pytest.mark.parametrize("weights,n,match", [([1.0], 2, "one per checkpoint"), ([1.0, -1.0], 2, ">= 0"),
                                             ([0.0, 0.0], 2, "positive sum"), (None, 1, "at least 2")])
def test_bad_weights_are_refused(weights, n, match):
    with pytest.raises(ConfigError, match=match):
        convex_weights(weights, n)


def test_different_architectures_are_refused():
    with pytest.raises(ConfigError, match="other weights"):
        interpolate_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [0.5, 0.5])
    with pytest.raises(ConfigError, match="shapes"):
        interpolate_state_dicts([{"a": torch.zeros(1)}, {"a": torch.zeros(2)}], [0.5, 0.5])


def small_checkpoint(out: Path, cache: Path, seed: int, image_size: int = 32) -> str:
    overrides = ["data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "test=false", "evaluate=false",
                 "~logger.tensorboard", f"seed={seed}", f"data.image_size={image_size}", f"paths.output_dir={out}",
                 f"paths.cache_dir={cache}", *FAST]
    train(compose("train", overrides))
    return str(out / "checkpoints" / "fast_dev_run.ckpt")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, cache_dir) -> dict[str, str]:
    base = tmp_path_factory.mktemp("wse")
    return {"a": small_checkpoint(base / "a", cache_dir, 1), "b": small_checkpoint(base / "b", cache_dir, 2),
            "s48": small_checkpoint(base / "s48", cache_dir, 1, image_size=48)}


def test_checkpoint_ensemble_loads_and_its_ends_are_the_members(ckpts, tmp_path):
    x = torch.rand(4, 3, 32, 32)
    a, b = (load_module(ckpts[k]) for k in "ab")
    with torch.no_grad():
        want_a, want_b = a(x), b(x)
        assert not torch.allclose(want_a, want_b)  # different seeds: different weights
        ends = []
        for w in ([1.0, 0.0], [0.0, 2.0]):
            out = write_weight_ensemble([ckpts["a"], ckpts["b"]], w, tmp_path / f"end{w[0]}.ckpt")
            ends.append(load_module(out)(x))
    torch.testing.assert_close(ends[0], want_a)
    torch.testing.assert_close(ends[1], want_b)
    mid = weight_space_ensemble([ckpts["a"], ckpts["b"]], None)
    sa, sb = read_checkpoint(ckpts["a"])["state_dict"], read_checkpoint(ckpts["b"])["state_dict"]
    key = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    torch.testing.assert_close(mid["state_dict"][key], (sa[key] + sb[key]) / 2)
    assert mid["bloodcell"]["weight_ensemble"]["weights"] == [0.5, 0.5] and "optimizer_states" not in mid


def test_other_model_or_existing_file_is_refused_and_kept(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="cannot be averaged"):
        weight_space_ensemble([ckpts["s48"], ckpts["a"]])
    out = tmp_path / "x.ckpt"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists"):
        write_weight_ensemble([ckpts["a"], ckpts["b"]], None, out)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ConfigError, match="one of the input"):
        write_weight_ensemble([ckpts["a"], ckpts["b"]], None, ckpts["a"], overwrite=True)


def test_weight_ensemble_command(ckpts, tmp_path):
    out = tmp_path / "wise.ckpt"
    cmd = [sys.executable, "-m", "bloodcell.tools.weight_ensemble", f"ckpts=[{ckpts['a']},{ckpts['b']}]", "weights=[1,3]",
           f"out={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(out)["bloodcell"]["weight_ensemble"]["weights"] == [0.25, 0.75]
    bad = subprocess.run([*cmd[:3], f"ckpts={ckpts['a']}", f"out={tmp_path / 'y.ckpt'}", f"hydra.run.dir={tmp_path / 'run2'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "ckpts must be a list" in bad.stderr
