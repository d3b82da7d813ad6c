"""End to end on data=sample: two fast_dev_run checkpoints at different image sizes → ensemble evaluate
with TTA, temperature scaling and a small benchmark folder → every report file, consistent numbers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodcell.config import compose
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.benchmark_sets import BenchmarkSpec, build_benchmark_sets
from bloodcell.evaluation.inference import InferenceSettings, ensemble_predict, load_members
from bloodcell.evaluation.runner import EvalOptions, evaluate, run
from bloodcell.training import train
from tests.conftest import FAST


def _compose(name: str, overrides: list[str]):
    return compose(name, overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> dict:
    """Two tiny checkpoints on the sample's split (96 px and 64 px) and a 2×2 corruption benchmark."""
    root = tmp_path_factory.mktemp("ens")
    ckpts = []
    for size in (96, 64):
        cfg = _compose(
            "train",
            [
                f"paths.output_dir={root / f'run{size}'}",
                f"paths.cache_dir={cache_dir}",
                "data=sample",
                "model=small_cnn",
                "trainer.fast_dev_run=true",
                "evaluate=false",
                "test=false",
                f"data.image_size={size}",
                *FAST,
            ],
        )
        train(cfg)
        ckpts.append(str(json.loads((root / f"run{size}" / "summary.json").read_text())["best_checkpoint"]))
    bcfg = _compose(
        "benchmark_sets",
        [
            f"paths.cache_dir={cache_dir}",
            "data=sample",
            "data.num_workers=0",
            f"out={root / 'bench'}",
            "corruptions=[defocus_blur,stain_shift]",
            "severities=[1,5]",
        ],
    )
    build_benchmark_sets(bcfg.data, bcfg.out, BenchmarkSpec.from_cfg(bcfg))
    return {"root": root, "ckpts": ckpts, "bench": root / "bench", "cache": cache_dir}


def read_probs(path: Path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.DictReader(open(path)))
    cols = [k for k in rows[0] if k.startswith("p_")]
    return [r["id"] for r in rows], np.array([[float(r[c]) for c in cols] for r in rows])


def test_ensemble_evaluate_writes_everything(trained, tmp_path):
    a, b = trained["ckpts"]
    cfg = _compose(
        "evaluate",
        [
            f"ckpt=[{a},{b}]",
            "weights=[3,1]",
            "tta=flips",
            "calibrate=true",
            f"benchmark_dir={trained['bench']}",
            "num_workers=0",
            f"paths.cache_dir={trained['cache']}",
            f"output_dir={tmp_path / 'ens'}",
        ],
    )
    metrics = run(cfg)
    out = tmp_path / "ens"
    for f in (
        "metrics.json",
        "report.md",
        "predictions.csv",
        "confusion_matrix.png",
        "reliability.png",
        "robustness.json",
        "corruption_accuracy.csv",
        "corruption_heatmap.png",
    ):
        assert (out / f).is_file(), f
    assert [m["image_size"] for m in metrics["members"]] == [96, 64] and metrics["split"] == "test" and metrics["tta"] == "flips"
    assert metrics["calibration"]["temperature"] > 0 and 0 <= metrics["ece"] <= 1
    robust = json.loads((out / "robustness.json").read_text())
    assert set(robust["corruptions"]) == {"defocus_blur", "stain_shift"} and set(robust["corruptions"]["stain_shift"]) == {"1", "5"}
    s = robust["summary"]
    assert all(0 <= s[k] <= 1 for k in ("val_acc", "test_acc", "bmk_acc", "mean_corruption_acc"))
    assert s["mean_corruption_acc"] == pytest.approx(np.mean([v for r in robust["corruptions"].values() for v in r.values()]))
    assert s["test_acc"] == metrics["accuracy"]
    assert "Robustness summary" in (out / "report.md").read_text() and "stain_shift" in (out / "report.md").read_text()

    # the ensemble's probabilities are the 3:1 average of each member's own (TTA'd) probabilities, temperature applied
    ids, ens = read_probs(out / "predictions.csv")
    assert len(ids) == metrics["n"] and np.allclose(ens.sum(1), 1, atol=1e-4)
    members = []
    for i, ck in enumerate((a, b)):
        evaluate([ck], None, tmp_path / f"m{i}", EvalOptions.defaults(device="cpu", loader_overrides={"num_workers": 0}, tta="flips"))
        mids, p = read_probs(tmp_path / f"m{i}" / "predictions.csv")
        assert mids == ids
        members.append(p)
    from bloodcell.evaluation.metrics import apply_temperature

    expected = apply_temperature(0.75 * members[0] + 0.25 * members[1], metrics["calibration"]["temperature"])
    np.testing.assert_allclose(ens, expected, atol=2e-5)


def test_clean_benchmark_equals_test_split_and_outputs_are_kept(trained, tmp_path):
    """A single 96 px member sees the same pixels in clean.npz as in its test split: identical accuracy."""
    a = trained["ckpts"][0]
    m = evaluate(
        [a],
        None,
        tmp_path / "one",
        EvalOptions.defaults(device="cpu", loader_overrides={"num_workers": 0}, benchmark_dir=trained["bench"], cache_dir=trained["cache"]),
    )
    assert m["robustness"]["clean_benchmark_acc"] == m["robustness"]["test_acc"] == m["accuracy"]
    with pytest.raises(ConfigError, match="already exists"):
        evaluate([a], None, tmp_path / "one", EvalOptions.defaults(device="cpu", loader_overrides={"num_workers": 0}))


def test_members_on_different_splits_are_refused(trained):
    members = load_members(trained["ckpts"][:1] * 2)
    members[1].module.hparams.data["split_seed"] = 7  # another split of the same folder
    with pytest.raises(DataError, match="see different images"):
        ensemble_predict(members, None, "test", InferenceSettings(torch.device("cpu"), loader_overrides={"num_workers": 0}))
    with pytest.raises(ConfigError, match="weights"):
        load_members(trained["ckpts"], [1.0])


def test_checkpoint_trained_elsewhere_uses_the_given_data_for_its_own_splits(trained, tmp_path, cache_dir):
    """A checkpoint from a GPU node names a data folder that is not here: with `data=` given, the robustness pass
    takes val/test from that source (same split) and gives the numbers of the checkpoint at its own folder."""
    a = trained["ckpts"][0]
    ckpt = torch.load(a, map_location="cpu", weights_only=True)
    data = ckpt["hyper_parameters"]["data"]
    data["root"] = data["source"]["root"] = str(tmp_path / "gpu_node" / "data" / "sample")
    data["cache_dir"] = str(tmp_path / "gpu_node" / "cache")
    moved = tmp_path / "moved.ckpt"
    torch.save(ckpt, moved)
    data_cfg = _compose("train", [f"paths.cache_dir={cache_dir}", "data=sample"]).data
    opts = EvalOptions.defaults(device="cpu", loader_overrides={"num_workers": 0}, benchmark_dir=trained["bench"],
                                cache_dir=trained["cache"], split="test")
    here = evaluate([a], None, tmp_path / "here", opts)
    there = evaluate([str(moved)], data_cfg, tmp_path / "there", opts)
    assert there["accuracy"] == here["accuracy"]
    assert there["robustness"] == here["robustness"]
    with pytest.raises(DataError, match="does not exist"):
        evaluate([str(moved)], None, tmp_path / "nowhere", opts)
    # data split another way is not the checkpoint's split: no fallback, the missing folder is named
    other = _compose("train", [f"paths.cache_dir={cache_dir}", "data=sample", "data.split_seed=7"]).data
    with pytest.raises(DataError, match="does not exist"):
        evaluate([str(moved)], other, tmp_path / "other", opts)
