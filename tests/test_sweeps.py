"""Sweeps: real multiruns through train.py (basic grid and Optuna), the leaderboard, presets and the SLURM launcher config."""
from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bloodcell.config import compose
from bloodcell.errors import BloodcellError
from bloodcell.sweeps.leaderboard import build_table, collect_runs, ensemble_command, parse_override, resolve_sweep_dir, summarize
from tests.conftest import CONF, ROOT

# fast, quiet jobs on the committed sample: one batch each, no test/eval pass, tiny images
QUICK_JOB = [
    "data=sample", "model=small_cnn", "trainer.fast_dev_run=true", "data.image_size=32", "test=false", "evaluate=false",
    "~callbacks.progress_bar", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu", "data.num_workers=0", "logger=csv",
]


def run_multirun(args: list[str], sweep_dir: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", *args, *QUICK_JOB, f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep_dir}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_grid_multirun_three_jobs_and_leaderboard(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    run_multirun(["optim=adam,sgd,lion"], sweep, cache_dir)
    runs = collect_runs(sweep)
    assert [r.job for r in runs] == ["0", "1", "2"] and all(r.status == "ok" for r in runs)
    assert sorted(r.overrides["optim"] for r in runs) == ["adam", "lion", "sgd"]
    assert all(Path(r.best_checkpoint).is_file() for r in runs)

    paths = summarize(sweep)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 3 and {row["optim"] for row in rows} == {"adam", "sgd", "lion"}
    assert all(0.0 <= float(row["val/bal_acc"]) <= 1.0 and Path(row["best_checkpoint"]).is_file() for row in rows)
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    header = next(line for line in paths["md"].read_text().splitlines() if line.startswith("| rank |"))
    assert header.startswith("| rank | job | status | optim | val/bal_acc |")
    assert paths["png"].stat().st_size > 5000
    saved = json.loads(paths["json"].read_text())
    assert saved["swept"] == ["optim"] and len(saved["rows"]) == 3

    # the thin command: same files from the task folder (newest sweep), exit 0
    res = subprocess.run([sys.executable, "-m", "bloodcell.tools.leaderboard", str(sweep), "--out", str(tmp_path / "lb")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "lb" / "leaderboard.csv").read_text() == paths["csv"].read_text()


def test_optuna_two_trials(tmp_path, cache_dir):
    sweep = tmp_path / "optuna"
    res = run_multirun(["hparams_search=optuna", "hydra.sweeper.n_trials=2"], sweep, cache_dir)
    assert "setup plugin alembic" not in res.stdout + res.stderr  # alembic's INFO noise is silenced
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.0 <= results["best_value"] <= 1.0 and "optim.optimizer.lr" in results["best_params"]
    runs = collect_runs(sweep)
    assert len(runs) == 2 and all(r.status == "ok" for r in runs)
    lrs = {float(r.overrides["optim.optimizer.lr"]) for r in runs}
    assert len(lrs) == 2 and all(1e-5 <= lr <= 1e-2 for lr in lrs)
    paths = summarize(sweep)
    assert "## Optuna" in paths["md"].read_text() and paths["png"].is_file()


# --- leaderboard logic on hand-made job folders -----------------------------------------------------------------

def make_job(sweep: Path, num: int, overrides: list[str], summary: dict | None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def summary_of(best: float | None, val: float, test: float) -> dict:
    return {"best_checkpoint": "/ckpt.ckpt", "best_score": best, "monitor": "val/bal_acc", "epochs": 3, "seconds_per_epoch": 1.5,
            "metrics": {"val/bal_acc": val, "val/acc": val, "test/acc": test, "train/loss": 1.0, "lr-Adam": 0.001}}


def test_leaderboard_ranks_by_best_score_and_keeps_incomplete_runs(tmp_path):
    sweep = tmp_path / "s"
    (sweep).mkdir()
    (sweep / "multirun.yaml").write_text("{}")
    for num, lr in enumerate(["0.1", "0.01", "0.001"]):
        make_job(sweep, num, ["model=small_cnn", f"optim.optimizer.lr={lr}"], summary_of(best=[0.5, 0.9, None][num], val=0.4, test=0.3))
    make_job(sweep, 10, ["model=small_cnn", "optim.optimizer.lr=1.0"], None)  # crashed: no summary.json
    runs = collect_runs(sweep)
    assert [r.job for r in runs] == ["0", "1", "2", "10"]  # numeric order, not "10" before "2"
    columns, rows = build_table(runs, "val/bal_acc")
    assert columns[:5] == ["rank", "job", "status", "optim.optimizer.lr", "val/bal_acc"]  # model=small_cnn is not swept
    assert "train/loss" not in columns and "lr-Adam" not in columns
    # job 1: best checkpoint 0.9; job 0: 0.5; job 2: no best score → its final value 0.4; job 10 unranked, last
    assert [(r["job"], r["rank"], r["val/bal_acc"]) for r in rows] == [("1", 1, 0.9), ("0", 2, 0.5), ("2", 3, 0.4), ("10", "", None)]
    assert rows[-1]["status"] == "incomplete"
    command = ensemble_command(rows, 2)
    assert command == 'python evaluate.py \'ckpt=["/ckpt.ckpt","/ckpt.ckpt"]\''
    # what the shell passes on parses as a Hydra list override, even for names like best-epoch=002.ckpt
    rows[0]["best_checkpoint"] = "/runs/1/checkpoints/best-epoch=002.ckpt"
    argument = shlex.split(ensemble_command(rows, 2))[2]
    assert OverridesParser.create().parse_override(argument).value() == ["/runs/1/checkpoints/best-epoch=002.ckpt", "/ckpt.ckpt"]
    paths = summarize(sweep, metric="test/acc")
    assert json.loads(paths["json"].read_text())["metric"] == "test/acc"
    assert "Overrides shared by all runs: `model=small_cnn`" in paths["md"].read_text()


def test_override_parsing():
    assert parse_override("optim=adam") == ("optim", "adam")
    assert parse_override("++model.freeze=true") == ("model.freeze", "true")
    assert parse_override("model.head.hidden=[1024,128]") == ("model.head.hidden", "[1024,128]")
    assert parse_override("~callbacks.progress_bar") == ("callbacks.progress_bar", "<deleted>")


def test_task_folder_resolves_to_newest_sweep_and_errors_are_clear(tmp_path):
    task = tmp_path / "multirun" / "train"
    for stamp in ("2026-01-01_10-00-00", "2026-01-02_09-00-00"):
        (task / stamp).mkdir(parents=True)
        (task / stamp / "multirun.yaml").write_text("{}")
    assert resolve_sweep_dir(task).name == "2026-01-02_09-00-00"
    with pytest.raises(BloodcellError, match="no such folder"):
        resolve_sweep_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BloodcellError, match="holds no Hydra multirun"):
        resolve_sweep_dir(tmp_path / "empty")
    with pytest.raises(BloodcellError, match="no Hydra job folders"):
        summarize(task)
    res = subprocess.run(
        [sys.executable, "-m", "bloodcell.tools.leaderboard", str(tmp_path / "empty")], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


# --- configs: search space, presets' jobs, SLURM launcher ------------------------------------------------------


def compose_train(overrides: list[str], tmp_path: Path, hydra: bool = False):
    return compose("train", [f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=hydra)


def test_optuna_search_space_config(tmp_path):
    cfg = compose_train(["hparams_search=optuna"], tmp_path, hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize" and sweeper.storage is None
    assert cfg.optimized_metric == "val/bal_acc"
    params = dict(sweeper.params)
    assert {
        "optim.optimizer.lr",
        "optim.optimizer.weight_decay",
        "model.head.dropout",
        "model.head.hidden",
        "mix.mixup_alpha",
        "augment",
    } <= set(params)
    # every searched key exists in the composed config (a typo would only fail at sweep time otherwise)
    # (augment.* keys are checked with the augment config the search fixes, e.g. pipeline's magnitude)
    with_augment = compose_train(["hparams_search=optuna", f"augment={params['augment']}"], tmp_path, hydra=True)
    for key in params:
        if key != "augment":
            assert OmegaConf.select(with_augment, key, default="<missing>") != "<missing>", key
    # a preset chooses data/model/budget; the search space still comes from hparams_search
    small = compose_train(["experiment=cpu_small_search", "hparams_search=optuna"], tmp_path, hydra=True)
    assert small.task_name == "cpu_small_search" and small.hydra.sweeper.study_name == "cpu_small_search"
    assert dict(small.hydra.sweeper.params) == params and small.data.root.endswith("data/sample")


def test_slurm_launcher_config_one_gpu_per_trial(tmp_path):
    cfg = compose_train(["hydra/launcher=slurm", "hparams_search=optuna", "hydra.launcher.partition=gpu"], tmp_path, hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.nodes == 1 and launcher.partition == "gpu"
    assert cfg.trainer.devices == 1


def sweep_jobs(params: dict) -> list[list[str]]:
    """The jobs the basic sweeper would launch for hydra.sweeper.params (Hydra's own expansion)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_job_composes(preset, tmp_path):
    """Each job a preset's sweep launches composes and resolves (a missing option or key fails here, not at sweep time)."""
    base = compose_train([f"experiment={preset}"], tmp_path, hydra=True)
    params = base.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params) if params else {}
    jobs = sweep_jobs(params) if params else [[]]
    for job in jobs:
        cfg = compose_train([f"experiment={preset}", *job], tmp_path)
        assert cfg.task_name == preset, job
        OmegaConf.to_container(cfg, resolve=True)
    if preset.startswith("table"):
        assert len(jobs) >= 2
