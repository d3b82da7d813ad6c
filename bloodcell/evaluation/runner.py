"""Evaluate checkpoint(s) on the checkpoint's own test split or on any other data source: metrics, report, pictures."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from bloodcell.config import as_list, yaml_defaults
from bloodcell.errors import ConfigError
from bloodcell.evaluation.benchmark_sets import read_manifest
from bloodcell.evaluation.crosslab import crosslab_folders, crosslab_summary, evaluate_crosslab, format_crosslab_md
from bloodcell.evaluation.explain_report import check_explain_sets, explain_evaluation, explain_mode, format_explain_md
from bloodcell.evaluation.inference import (
    InferenceSettings,
    Predictions,
    ensemble_predict,
    load_members,
    own_split_or_none,
    require_checkpoints,
    resolve_device,
    tta_views,
)
from bloodcell.evaluation.metrics import (
    apply_temperature,
    bootstrap_intervals,
    check_bootstrap,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from bloodcell.evaluation.predict import run_predict
from bloodcell.evaluation.report import (
    format_report_md,
    format_summary,
    plot_confusion_matrix,
    plot_corruption_heatmap,
    plot_reliability,
    write_json,
    write_predictions_csv,
)
from bloodcell.evaluation.robustness import accuracy_of, robustness, write_corruption_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: the keys of conf/evaluate.yaml that travel together (their defaults live in that file)."""

    split: str  # auto | train | val | test | all
    tta: str  # none | flips | d4
    calibrate: bool
    ece_bins: int
    device: str
    overwrite: bool
    weights: list[float] | None = None  # None: equal weights (no weighting), not a tunable default
    benchmark_dir: str | None = None  # None: no robustness pass
    cache_dir: str | None = None  # where benchmark sets are cached; None: conf/paths' cache_dir
    loader_overrides: dict | None = None  # data.* keys for the evaluation loaders (eval_batch_size, eval_num_workers)
    explain: str | None = None  # None: no heat-maps; "gradcam": grid + heat-map cell share (explain_report.py)
    explain_sets: tuple[str, ...] = ()  # extra folders whose heat-map cell share is measured
    explain_max_images: int | None = None  # per set (from conf/evaluate.yaml when explain is on)
    explain_per_class: int | None = None  # grid examples per class and kind (from conf/evaluate.yaml)
    crosslab: tuple[str, ...] = ()  # folders of other labs' images, scored on their own (evaluation only)
    bootstrap: int | None = None  # resamples for the 95 % intervals (from conf/evaluate.yaml); 0: none

    @classmethod
    def from_cfg(cls, cfg: Any) -> EvalOptions:
        """From a composed evaluate config (python evaluate.py ...): every option as the user set it."""
        weights = as_list(cfg.get("weights"))
        loader = {"eval_batch_size": cfg.get("batch_size"), "eval_num_workers": cfg.get("num_workers")}
        paths = cfg.get("paths") or {}
        return cls(
            split=str(cfg.split),
            tta=str(cfg.tta),
            calibrate=bool(cfg.calibrate),
            ece_bins=int(cfg.ece_bins),
            device=str(cfg.device),
            overwrite=bool(cfg.overwrite),
            weights=[float(w) for w in weights] if weights else None,
            benchmark_dir=cfg.get("benchmark_dir"),
            cache_dir=paths.get("cache_dir"),
            loader_overrides={k: v for k, v in loader.items() if v is not None},
            explain=explain_mode(cfg.get("explain")),
            explain_sets=tuple(str(d) for d in as_list(cfg.get("explain_sets")) or ()),
            explain_max_images=cfg.get("explain_max_images"),
            explain_per_class=cfg.get("explain_per_class"),
            crosslab=tuple(str(f) for f in as_list(cfg.crosslab) or ()),
            bootstrap=cfg.get("bootstrap") or 0,
        )

    @classmethod
    def defaults(cls, **changes: Any) -> EvalOptions:
        """conf/evaluate.yaml's settings without composing it (train.py's evaluation after fitting, tools), with `changes`."""
        off = ("weights", "benchmark_dir", "cache_dir", "loader_overrides", "crosslab", "explain", "explain_sets")
        names = [f.name for f in fields(cls) if f.name not in off]
        return replace(cls(**yaml_defaults("evaluate.yaml", names)), **changes)


def score(probs: np.ndarray, labels: np.ndarray, classes: list[str], ece_bins: int, bootstrap: int = 0) -> dict:
    """Classification metrics plus calibration (ECE, NLL, reliability bins); with `bootstrap` resamples, 95 % intervals
    of accuracy and balanced accuracy (so 0.9736 and the 0.975 target can be told apart, or not)."""
    out = classification_metrics(probs, labels, classes)
    if bootstrap:
        ci = bootstrap_intervals(np.array(out["confusion_matrix"]), bootstrap)
        out["ci95"] = {"accuracy": ci["accuracy"], "balanced_accuracy": ci["macro_recall"],
                       **{k: ci[k] for k in ("level", "resamples", "method")}}
    out["ece"] = expected_calibration_error(probs, labels, ece_bins)
    out["nll"] = negative_log_likelihood(probs, labels)
    out["reliability"] = reliability_bins(probs, labels, ece_bins)
    return out


def calibrate(probs: np.ndarray, preds: Predictions, val: Predictions | None, ece_bins: int) -> tuple[np.ndarray, dict]:
    """Temperature fitted on the validation split → (calibrated probabilities, before/after record)."""
    if val is None:
        raise ConfigError("calibrate=true needs the validation split, but a checkpoint holds no data config; train with train.py.")
    temperature = fit_temperature(val.probs, val.labels)
    record = {
        "temperature": temperature,
        "fitted_on": "val",
        "n_val": len(val.labels),
        "ece_before": expected_calibration_error(probs, preds.labels, ece_bins),
        "nll_before": negative_log_likelihood(probs, preds.labels),
    }
    return apply_temperature(probs, temperature), record


def write_outputs(
    metrics: dict, preds: Predictions, probs: np.ndarray, classes: list[str], name: str, robust: dict | None, output_dir: Path,
    crosslab: dict | None = None,
) -> None:
    """metrics.json, the two PNGs, predictions.csv and report.md into output_dir."""
    write_json(metrics, output_dir / "metrics.json")
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]),
        classes,
        output_dir / "confusion_matrix.png",
        title=f"{name} on {preds.split} (acc {metrics['accuracy']:.3f})",
    )
    plot_reliability(metrics["reliability"], output_dir / "reliability.png", title=f"{name}: ECE {metrics['ece']:.3f}")
    write_predictions_csv(output_dir / "predictions.csv", preds.ids, preds.labels, probs, classes)
    extra = format_crosslab_md(crosslab) if crosslab else None
    (output_dir / "report.md").write_text(format_report_md(metrics, classes, robust, extra))


def evaluate(ckpts: list[str], data_cfg: Any | None, output_dir: str | Path, opts: EvalOptions) -> dict:
    """Predict with one checkpoint or an ensemble, score, calibrate, run the benchmark sets, write every report file."""
    output_dir = Path(output_dir)
    if (output_dir / "metrics.json").exists() and not opts.overwrite:
        raise ConfigError(f"{output_dir / 'metrics.json'} already exists; choose another output_dir or pass overwrite=true.")
    tta_views(opts.tta)  # validate before the slow part
    check_explain_sets(opts.explain_sets)
    if opts.benchmark_dir:
        read_manifest(opts.benchmark_dir)
    crosslab_folders(opts.crosslab)
    bootstrap = check_bootstrap(opts.bootstrap or 0)
    members = load_members(ckpts, opts.weights)
    classes = members[0].module.classes
    how = InferenceSettings(resolve_device(opts.device), opts.tta, opts.loader_overrides or {})
    preds = ensemble_predict(members, data_cfg, opts.split, how)
    val = own_split_or_none(members, "val", how, data_cfg) if (opts.calibrate or opts.benchmark_dir) else None
    probs, calibration = calibrate(preds.probs, preds, val, opts.ece_bins) if opts.calibrate else (preds.probs, None)
    metrics = score(probs, preds.labels, classes, opts.ece_bins, bootstrap)
    sizes = sorted({int(m.module.hparams.image_size) for m in members})
    metrics.update(
        {
            "checkpoint": members[0].path if len(members) == 1 else [m.path for m in members],
            "members": [m.describe() for m in members],
            "split": preds.split,
            "source": preds.source,
            "image_size": sizes[0] if len(sizes) == 1 else sizes,
            "tta": opts.tta,
            "calibration": calibration,
        }
    )
    robust = None
    if opts.benchmark_dir:
        if data_cfg is None and preds.split == "test":
            test_acc = metrics["accuracy"]
        else:
            test = own_split_or_none(members, "test", how, data_cfg)
            test_acc = accuracy_of(test) if test is not None else None
        robust = robustness(members, opts.benchmark_dir, how, opts.cache_dir, val, test_acc)
        write_json(robust, output_dir / "robustness.json")
        write_corruption_csv(robust["corruptions"], output_dir / "corruption_accuracy.csv")
        plot_corruption_heatmap(
            robust["corruptions"],
            output_dir / "corruption_heatmap.png",
            title=f"accuracy under corruption (mean {robust['summary']['mean_corruption_acc']:.3f})",
        )
        metrics["robustness"] = robust["summary"]
    crosslab = evaluate_crosslab(members, opts.crosslab, how, output_dir, opts.cache_dir, bootstrap) if opts.crosslab else None
    if crosslab:
        metrics["crosslab"] = crosslab_summary(crosslab)
    if opts.explain:  # heat-map cell share also on every cross-lab folder
        output_dir.mkdir(parents=True, exist_ok=True)
        sets = replace(opts, explain_sets=tuple(dict.fromkeys([*opts.explain_sets, *opts.crosslab])))
        metrics["explain"] = explain_evaluation(members, data_cfg, preds.split, preds.labels, probs, classes, sets, how, output_dir)
    name = Path(members[0].path).name if len(members) == 1 else f"ensemble of {len(members)}"
    write_outputs(metrics, preds, probs, classes, name, robust, output_dir, crosslab)
    if opts.explain:
        with open(output_dir / "report.md", "a") as f:
            f.write("\n" + format_explain_md(metrics["explain"]))
    log.info("evaluation of %s on %s split:\n%s", name, preds.split, format_summary(metrics, classes))
    if robust:
        s = robust["summary"]
        log.info(
            "robustness: val acc %s | test acc %s | Bmk acc %s | mean corruption acc %s",
            *(f"{s[k]:.4f}" if s[k] is not None else "–" for k in ("val_acc", "test_acc", "bmk_acc", "mean_corruption_acc")),
        )
    log.info("wrote metrics.json, report.md, predictions.csv and PNGs to %s", output_dir)
    return metrics


def evaluate_checkpoint(ckpt: str, data_cfg: Any | None, split: str, output_dir: str | Path, loader_overrides: dict | None = None,
                        crosslab: Sequence[str] = ()) -> dict:
    """One checkpoint, no extras but the cross-lab folders (what train.py runs after fitting). It may refresh the run's
    own eval/ folder: a run resumed into its own directory re-evaluates its new best checkpoint."""
    opts = EvalOptions.defaults(split=split, overwrite=True, loader_overrides=loader_overrides, crosslab=tuple(str(f) for f in crosslab))
    return evaluate([ckpt], data_cfg, output_dir, opts)


def run(cfg: DictConfig) -> dict:
    """evaluate.py's library entry: a folder prediction (predict_dir=DIR) or an evaluation of ckpt(s)."""
    if cfg.get("predict_dir"):
        return run_predict(cfg)
    return evaluate(require_checkpoints(cfg.get("ckpt")), cfg.get("data") or None, cfg.output_dir, EvalOptions.from_cfg(cfg))
