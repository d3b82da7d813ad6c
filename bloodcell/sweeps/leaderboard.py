"""Turn a Hydra multirun folder into a leaderboard: CSV + markdown + JSON, and a PNG of metric vs each swept parameter.

python -m bloodcell.tools.leaderboard multirun/<task>/<date>_<time>   (or multirun/<task>: its newest sweep)

Each job folder holds `.hydra/overrides.yaml` (what was swept) and, once it finished, `summary.json`
(written by bloodcell.training). A job without `summary.json` is listed as incomplete, never dropped.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bloodcell.errors import BloodcellError

log = logging.getLogger(__name__)

OUTPUT_STEM = "leaderboard"
DEFAULT_COLUMNS = ("val/acc", "val/bal_acc", "val/f1", "test/acc", "test/bal_acc", "test/f1")
HIDDEN_METRIC_PREFIXES = ("train/", "lr-")


@dataclass
class RunRecord:
    """One job of a sweep: its overrides, its final metrics and its best checkpoint."""

    job: str
    path: Path
    overrides: dict[str, str]  # key → value, as parsed by parse_override
    status: str  # "ok" (summary.json written) or "incomplete" (crashed, running, or killed)
    metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str = ""
    best_score: float | None = None
    monitor: str | None = None
    epochs: int | None = None
    seconds_per_epoch: float | None = None

    def score(self, metric: str) -> float | None:
        """The ranking value: the best checkpoint's score when `metric` is what checkpoints were chosen on,
        else the metric's final value (NaN and missing → None)."""
        value = self.best_score if (metric == self.monitor and self.best_score is not None) else self.metrics.get(metric)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def parse_override(text: str) -> tuple[str, str]:
    """'optim=adam' → ('optim', 'adam'); '+a.b=1' / '++a.b=1' → ('a.b', '1'); '~key' → ('key', '<deleted>')."""
    text = str(text)
    if text.startswith("~"):
        key = text[1:].split("=", 1)[0]
        return key, "<deleted>"
    key, _, value = text.partition("=")
    return key.lstrip("+"), value


def job_sort_key(path: Path) -> tuple[int, str]:
    """Numeric job folders (0, 1, ..., 10) in numeric order, others after them by name."""
    name = path.name
    return (int(name), "") if name.isdigit() else (sys.maxsize, name)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders below `sweep_dir` that hold a Hydra job's `.hydra/overrides.yaml` (any subdir pattern)."""
    jobs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return sorted((j for j in jobs if j != sweep_dir), key=lambda p: (len(p.relative_to(sweep_dir).parts), job_sort_key(p)))


def resolve_sweep_dir(path: str | Path) -> Path:
    """A sweep folder, or a task folder (multirun/<task>) whose newest sweep is taken."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BloodcellError(f"{path}: no such folder; give a multirun folder such as multirun/<task>/<date>_<time>.")
    if (path / "multirun.yaml").is_file():
        return path
    sweeps = sorted((p for p in path.iterdir() if p.is_dir() and (p / "multirun.yaml").is_file()), key=lambda p: p.name)
    if sweeps:
        if len(sweeps) > 1:
            log.info("%s holds %d sweeps; using the newest, %s", path, len(sweeps), sweeps[-1].name)
        return sweeps[-1]
    if find_job_dirs(path):
        return path
    raise BloodcellError(f"{path} holds no Hydra multirun (no multirun.yaml, no job with .hydra/overrides.yaml); "
                         "run `python train.py -m ...` first or give the sweep folder it printed.")


def read_run(job_dir: Path, sweep_dir: Path) -> RunRecord:
    """One job folder → RunRecord (overrides from .hydra, metrics from summary.json, or 'incomplete')."""
    overrides_list = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = dict(parse_override(o) for o in overrides_list)
    job = str(job_dir.relative_to(sweep_dir))
    summary_path = job_dir / "summary.json"
    if not summary_path.is_file():
        return RunRecord(job=job, path=job_dir, overrides=overrides, status="incomplete")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as exc:
        raise BloodcellError(f"{summary_path}: not valid JSON ({exc}); delete it or re-run that job.") from None
    metrics = {k: float(v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return RunRecord(
        job=job, path=job_dir, overrides=overrides, status="ok", metrics=metrics,
        best_checkpoint=summary.get("best_checkpoint") or "", best_score=summary.get("best_score"),
        monitor=summary.get("monitor"), epochs=summary.get("epochs"), seconds_per_epoch=summary.get("seconds_per_epoch"),
    )


def collect_runs(sweep_dir: Path) -> list[RunRecord]:
    """Every job of a sweep folder as a RunRecord, in job order; a folder without jobs is an error."""
    jobs = find_job_dirs(sweep_dir)
    if not jobs:
        raise BloodcellError(f"{sweep_dir} holds no Hydra job folders (none with .hydra/overrides.yaml); is it a multirun folder?")
    return [read_run(j, sweep_dir) for j in jobs]


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs (or is missing in some), in first-seen order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def metric_columns(runs: list[RunRecord], metric: str) -> list[str]:
    """The ranking metric first, then val/ and test/ (and any other evaluation) metrics; no train/ or lr- curves."""
    seen = {k for r in runs for k in r.metrics}
    extra = sorted(k for k in seen if k not in DEFAULT_COLUMNS and not k.startswith(HIDDEN_METRIC_PREFIXES) and not k.endswith("loss"))
    return [metric] + [c for c in (*DEFAULT_COLUMNS, *extra) if c != metric and c in seen]


def default_metric(runs: list[RunRecord]) -> str:
    """The metric the runs' checkpoints were selected on (their monitor), else val/bal_acc."""
    monitors = [r.monitor for r in runs if r.monitor]
    return monitors[0] if monitors else "val/bal_acc"


def build_table(runs: list[RunRecord], metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows ranked by `metric` (best first; incomplete and unscored runs last) with columns in reading order."""
    swept = swept_keys(runs)
    metrics = metric_columns(runs, metric)
    ranked = sorted(runs, key=lambda r: (r.score(metric) is None, -(r.score(metric) or 0.0), job_sort_key(Path(r.job))))
    rows = []
    for rank, run in enumerate(ranked, start=1):
        score = run.score(metric)
        row: dict[str, Any] = {"rank": rank if score is not None else "", "job": run.job, "status": run.status}
        row.update({key: run.overrides.get(key, "") for key in swept})
        row[metric] = score
        row.update({m: run.metrics.get(m) for m in metrics[1:]})
        row.update({"epochs": run.epochs, "seconds_per_epoch": run.seconds_per_epoch, "best_checkpoint": run.best_checkpoint,
                    "overrides": " ".join(f"{k}={v}" for k, v in run.overrides.items())})
        rows.append(row)
    columns = ["rank", "job", "status", *swept, *metrics, "epochs", "seconds_per_epoch", "best_checkpoint", "overrides"]
    return columns, rows


def format_cell(value: Any, column: str = "") -> str:
    """A table cell as text: metrics to 4 decimals, seconds per epoch to 2, sampled float overrides to 4 digits, missing empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if column == "seconds_per_epoch" else f"{value:.4f}"
    if isinstance(value, str) and "." in value and as_number(value) is not None:
        return f"{float(value):.4g}"  # a sampled float override such as lr=0.0001329291894316216
    return str(value)


def write_csv(columns: list[str], rows: list[dict], path: Path) -> None:
    """leaderboard.csv: one row per run, every column."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: ("" if row.get(c) is None else row.get(c)) for c in columns} for row in rows)


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    """A markdown table of the rows (pipes in values escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c), c).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def common_overrides(runs: list[RunRecord]) -> str:
    """The overrides every run shares (the sweep's fixed settings), as one line."""
    swept = set(swept_keys(runs))
    first = runs[0].overrides if runs else {}
    return " ".join(f"{k}={v}" for k, v in first.items() if k not in swept)


def read_optuna_results(sweep_dir: Path) -> dict | None:
    """hydra-optuna-sweeper's optimization_results.yaml (best params and value), when the sweep used Optuna."""
    path = sweep_dir / "optimization_results.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def ensemble_command(rows: list[dict], top_k: int) -> str | None:
    """`python evaluate.py ckpt=[...]` averaging the best `top_k` finished runs' checkpoints."""
    ckpts = [r["best_checkpoint"] for r in rows if r["rank"] != "" and r["best_checkpoint"]][:top_k]
    if len(ckpts) < 2:
        return None
    # quoted list items: a path holding '=' or other Hydra syntax would be rejected unquoted
    return "python evaluate.py " + shlex.quote("ckpt=[" + ",".join(json.dumps(c) for c in ckpts) + "]")


def write_markdown(sweep_dir: Path, metric: str, columns: list[str], rows: list[dict], common: str, optuna: dict | None,
                   ensemble: str | None, plot_name: str | None, path: Path) -> None:
    """The table without the long per-run overrides column (the CSV keeps it); shared overrides stated once."""
    done = sum(r["status"] == "ok" for r in rows)
    parts = [f"# Leaderboard: {sweep_dir}", "",
             f"{len(rows)} jobs, {done} finished; ranked by `{metric}` (the best checkpoint's score when checkpoints "
             "were selected on it, else its final value).", "", f"Overrides shared by all runs: `{common or '(none)'}`", "",
             markdown_table([c for c in columns if c != "overrides"], rows), ""]
    if optuna:
        parts += ["## Optuna", "", f"best value: {optuna.get('best_value')}", "",
                  "best params: " + ", ".join(f"`{k}={v}`" for k, v in (optuna.get("best_params") or {}).items()), ""]
    if ensemble:
        parts += ["## Ensemble of the top runs", "", "```bash", ensemble, "```", ""]
    if plot_name:
        parts += [f"![{metric} against each swept parameter]({plot_name})", ""]
    path.write_text("\n".join(parts))


def as_number(value: Any) -> float | None:
    """A swept value as a float when it is numeric (for the x axis), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plot_history(ax, rows: list[dict], ys: list[float]) -> None:
    """Metric by job number with the best-so-far line: how a sequential search (Optuna) progressed."""
    from matplotlib.ticker import MaxNLocator

    xs = [job_sort_key(Path(r["job"]))[0] if r["job"].isdigit() else i for i, r in enumerate(rows)]
    order = sorted(range(len(xs)), key=xs.__getitem__)
    best = [max(ys[j] for j in order[: i + 1]) for i in range(len(order))]
    ax.plot([xs[j] for j in order], [ys[j] for j in order], "o", label="job")
    ax.step([xs[j] for j in order], best, where="post", label="best so far")
    ax.legend(fontsize=7)
    ax.set_xlabel("job number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_parameter(ax, values: list[Any], ys: list[float]) -> None:
    """Numeric values → scatter (log x when they span ≥ 2 decades); others → one column per category with its mean."""
    numbers = [as_number(v) for v in values]
    if all(n is not None for n in numbers):
        ax.scatter(numbers, ys)
        if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
            ax.set_xscale("log")
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))  # lr=1e-4 as 1e-4, not 0.00010
        return
    cats = sorted(set(map(str, values)), key=lambda c: (as_number(c) is None, as_number(c) or 0.0, c))
    pos = {c: i for i, c in enumerate(cats)}
    ax.scatter([pos[str(v)] for v in values], ys, alpha=0.7)
    means = [sum(y for v, y in zip(values, ys) if str(v) == c) / sum(str(v) == c for v in values) for c in cats]
    ax.plot(range(len(cats)), means, "_", markersize=24, color="black", label="mean")
    long_names = max(len(c) for c in cats) > 6
    ax.set_xticks(range(len(cats)), cats, rotation=30 if long_names else 0, ha="right" if long_names else "center")


def plot_leaderboard(rows: list[dict], swept: list[str], metric: str, path: Path, title: str, history: bool = False) -> Path | None:
    """One panel per swept parameter (metric against its values); with `history` also the metric by job number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if isinstance(r.get(metric), float)]
    if not scored:
        return None
    ys = [r[metric] for r in scored]
    panels = [*swept, "job order"] if history else (swept or ["job order"])
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        if key == "job order":
            plot_history(ax, scored, ys)
        else:
            plot_parameter(ax, [r.get(key, "") for r in scored], ys)
            ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize(sweep: str | Path, metric: str | None = None, out_dir: str | Path | None = None, ensemble_top: int = 0) -> dict[str, Path]:
    """Write leaderboard.{csv,md,json,png} for a sweep folder; returns their paths.

    The files are derived only from the job folders, so re-running (e.g. after more jobs finished) replaces them;
    nothing else in the folder is touched.
    """
    sweep_dir = resolve_sweep_dir(sweep)
    runs = collect_runs(sweep_dir)
    metric = metric or default_metric(runs)
    columns, rows = build_table(runs, metric)
    swept = swept_keys(runs)
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{OUTPUT_STEM}.{ext}" for ext in ("csv", "md", "json", "png")}
    optuna = read_optuna_results(sweep_dir)
    ensemble = ensemble_command(rows, ensemble_top) if ensemble_top else None
    write_csv(columns, rows, paths["csv"])
    paths["json"].write_text(
        json.dumps(
            {
                "sweep": str(sweep_dir),
                "metric": metric,
                "swept": swept,
                "columns": columns,
                "rows": rows,
                "optuna": optuna,
                "ensemble_command": ensemble,
            },
            indent=2,
            default=str,
        )
    )
    plot = plot_leaderboard(rows, swept, metric, paths["png"], title=f"{sweep_dir}\n{metric} per run", history=optuna is not None)
    if plot is None:
        paths.pop("png")
        log.warning("no finished run has %s; no plot drawn", metric)
    write_markdown(
        sweep_dir, metric, columns, rows, common_overrides(runs), optuna, ensemble, paths["png"].name if plot else None, paths["md"]
    )
    if not any(r.score(metric) is not None for r in runs):
        known = sorted({k for r in runs for k in r.metrics})
        log.warning("no run logged %r; logged metrics: %s", metric, known)
    return paths
