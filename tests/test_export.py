"""export.py: ONNX (checked with ONNX Runtime) and TorchScript files carry the model's normalisation, softmax, metadata
and an ensemble's average, take a dynamic batch, and match the PyTorch path of evaluate.py."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bloodcell.data.images import read_image
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.evaluation.export import export, load_exported, parity_images, reference_probs
from bloodcell.evaluation.inference import load_members
from bloodcell.evaluation.predict import ensemble_probs
from tests.conftest import ROOT
from tests.test_predict import make_checkpoint, sample_images

pytest.importorskip("onnxruntime")
RUN = {"layout": "nhwc", "parity_n": 48, "tolerance": 1e-4, "batch_size": 20}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, cache_dir) -> dict[str, str]:
    base = tmp_path_factory.mktemp("export_ckpts")
    return {"s32": make_checkpoint(base / "s32", cache_dir, 32), "s48": make_checkpoint(base / "s48", cache_dir, 48)}


@pytest.mark.parametrize("fmt,layout", [("onnx", "nhwc"), ("torchscript", "nchw")])
def test_export_matches_pytorch_with_metadata_and_dynamic_batch(ckpts, tmp_path, fmt, layout):
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    record = export(ckpts["s32"], fmt, out, **{**RUN, "layout": layout})
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff_prob"] <= 1e-4 and record["parity"]["images"] == 48
    assert json.loads((tmp_path / (out.name + ".json")).read_text())["sha256"] == record["sha256"]
    model = load_exported(out)
    module = load_members(ckpts["s32"])[0].module
    assert model.metadata["classes"] == module.classes and model.metadata["input"]["layout"] == layout
    assert model.metadata["parity"]["max_abs_diff_prob"] == record["parity"]["max_abs_diff_prob"]  # stored inside the file too
    assert model.preprocess == module.preprocessing  # rebuilt from the metadata
    images, _ = parity_images(load_members(ckpts["s32"]), 9)
    ref = reference_probs(load_members(ckpts["s32"]), images, 64)
    for n in (1, 2, 9):  # batch sizes other than the example's
        got = model(images[:n])
        assert got.shape == (n, len(module.classes)) and np.abs(got - ref[:n]).max() <= 1e-4
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_exported_model_on_raw_files_matches_folder_prediction(ckpts, tmp_path):
    out = tmp_path / "m.onnx"
    export(ckpts["s32"], "onnx", out, **RUN)
    raw = [read_image(p) for p in sample_images(6)]  # any size: Preprocess (from the metadata) runs first
    got = load_exported(out).predict_images(raw)
    ref = ensemble_probs(raw, [load_members(ckpts["s32"])[0].module], torch.device("cpu"))
    assert np.abs(got - ref).max() <= 1e-4


def test_ensemble_exports_as_one_averaging_model(ckpts, tmp_path):
    out = tmp_path / "ens.onnx"
    record = export([ckpts["s32"], ckpts["s32"]], "onnx", out, **RUN, weights=[3.0, 1.0])
    assert record["parity"]["passed"] and len(record["members"]) == 2
    assert [m["weight"] for m in record["members"]] == [3.0, 1.0]
    images, _ = parity_images(load_members(ckpts["s32"]), 5)
    single = reference_probs(load_members(ckpts["s32"]), images, 64)
    assert np.abs(load_exported(out)(images) - single).max() <= 1e-4  # the same member twice: the average is the member


def test_members_with_different_preprocessing_are_refused(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="preprocesses images differently"):
        export([ckpts["s32"], ckpts["s48"]], "onnx", tmp_path / "x.onnx", **RUN)
    assert not (tmp_path / "x.onnx").exists()


def test_refuses_to_overwrite_and_unknown_format(ckpts, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match="already exists"):
        export(ckpts["s32"], "torchscript", out, **RUN)
    with pytest.raises(ConfigError, match="format="):
        export(ckpts["s32"], "tflite", tmp_path / "m.tflite", **RUN)


def test_export_command(ckpts, tmp_path):
    out = tmp_path / "cli.onnx"
    proc = subprocess.run([sys.executable, "export.py", f"ckpt={ckpts['s48']}", f"out={out}", "parity_images=16",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "parity: max |Δprob| =" in proc.stdout and out.is_file() and (tmp_path / "cli.onnx.json").is_file()
