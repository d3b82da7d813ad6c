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
from bloodcell.evaluation.inference import load_members
from bloodcell.evaluation.weight_ensemble import write_weight_ensemble
from bloodcell.models.weight_space import convex_weights, differing_batchnorm, interpolate_state_dicts, reestimate_batchnorm
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
    assert load_members(out)[0].describe()["weight_ensemble"]["weights"] == [0.0, 1.0]  # metrics.json says what it is
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
    with pytest.raises(ConfigError, match="bn_images=-1"):
        write_weight_ensemble([ckpts["a"], ckpts["b"]], None, tmp_path / "n.ckpt", bn_images=-1)
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


def test_batchnorm_reestimation_is_the_plain_average_over_the_batches_of_the_named_layers_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).train()
    kept_mean = model[2].running_mean.clone().fill_(5.0)
    model[2].running_mean.copy_(kept_mean)
    batches = [torch.randn(8, 3) * 2 + 1, torch.randn(4, 3) - 3]
    seen = reestimate_batchnorm(model, batches, ["0"])
    assert seen == 12 and model.training and model[0].momentum == 0.1  # modes and momentum restored
    torch.testing.assert_close(model[0].running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))  # not momentum-weighted
    torch.testing.assert_close(model[0].running_var, torch.stack([b.var(0) for b in batches]).mean(0))  # mean of batch variances
    assert torch.equal(model[2].running_mean, kept_mean)
    with pytest.raises(ConfigError, match="not BatchNorm"):
        reestimate_batchnorm(model, batches, ["1"])


def test_only_the_batchnorm_layers_the_members_disagree_on_are_named():
    a = {"f.running_mean": torch.zeros(2), "f.running_var": torch.ones(2), "t.running_mean": torch.zeros(2), "t.running_var": torch.ones(2)}
    b = {**a, "t.running_var": torch.full((2,), 2.0)}
    assert differing_batchnorm([a, b]) == ["t"]


def test_ensemble_with_reestimated_batchnorm_records_it_and_loads(ckpts, tmp_path):
    out = write_weight_ensemble([ckpts["a"], ckpts["b"]], None, tmp_path / "bn.ckpt", bn_images=40)
    ckpt = read_checkpoint(out)
    meta = ckpt["bloodcell"]["weight_ensemble"]
    assert meta["batchnorm_differs"] and meta["batchnorm_reestimated_on"] == {"split": "train", "images": 40, "seed": 0}
    plain = weight_space_ensemble([ckpts["a"], ckpts["b"]])["state_dict"]
    key = f"{meta['batchnorm_differs'][0]}.running_mean"
    assert not torch.allclose(ckpt["state_dict"][key], plain[key])  # re-estimated, not the averaged statistics
    load_module(out)
