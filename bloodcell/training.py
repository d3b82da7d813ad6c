"""Training entry: compose → datamodule, module, callbacks, loggers, trainer → fit → test → evaluate."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from bloodcell.augment import build_train_transform, jsd_settings
from bloodcell.checkpoint import check_resume_compatible, init_from_checkpoint, module_from_checkpoint, read_checkpoint
from bloodcell.config import as_list, to_plain
from bloodcell.data.datamodule import BloodCellDataModule
from bloodcell.distributed import check_ddp_launch, hydra_multirun
from bloodcell.errors import BloodcellError, ConfigError
from bloodcell.evaluation.crosslab import check_not_training_on
from bloodcell.evaluation.model_card import write_model_card
from bloodcell.evaluation.report import write_json
from bloodcell.models.finetune import model_callbacks
from bloodcell.module import BloodCellModule

log = logging.getLogger(__name__)

PATH_KEYS = ("root", "path", "cache_dir")


def portable_data_cfg(data_cfg: Any) -> dict:
    """Resolved data config with absolute paths, stored in checkpoints so evaluation finds the same data."""
    cfg = to_plain(data_cfg)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (str(Path(v).expanduser().resolve()) if k in PATH_KEYS and isinstance(v, str) else fix(v)) for k, v in node.items()}
        return node

    return fix(cfg)


def build_datamodule(cfg: DictConfig) -> BloodCellDataModule:
    """The one data path: data config + augment op list (seeded) → BloodCellDataModule."""
    augment = cfg.get("augment") or {}
    train_tf = build_train_transform(augment, seed=cfg.get("seed"))
    return instantiate(cfg.data, train_transform=train_tf, seed=cfg.get("seed") or 0, _convert_="all")


def build_module(cfg: DictConfig, dm: BloodCellDataModule) -> BloodCellModule:
    """The LightningModule for this config and data: classes, size and class weights from the data, the rest from cfg."""
    weights = dm.class_weights
    module = BloodCellModule(
        model=cfg.model,
        optim=cfg.optim,
        classes=dm.classes,
        image_size=dm.image_size,
        loss=cfg.get("loss"),
        mix=cfg.get("mix"),
        class_weights=weights.tolist() if weights is not None else None,
        data=portable_data_cfg(cfg.data),
        channels_last=bool(cfg.channels_last),
        jsd=jsd_settings(cfg.get("augment")),
        batch_augment=cfg.get("batch_augment"),
        sam=cfg.get("sam"),
        distill=distill_settings(cfg.get("distill")),
        consistency=cfg.get("consistency"),
    )
    compile_model(module, cfg.get("compile"))
    return module


def distill_settings(distill: Any) -> dict | None:
    """cfg.distill with the teacher's path made absolute (provenance in the checkpoint and model card); None when off."""
    plain = to_plain(distill) or {}
    if not plain.get("teacher"):
        return None
    return {**plain, "teacher": str(Path(str(plain["teacher"])).expanduser().resolve())}


def load_teacher(cfg: DictConfig) -> Any:
    """distill.teacher's module, read before any data work so a bad path stops at once (None when distillation is off)."""
    settings = distill_settings(cfg.get("distill"))
    if settings is None:
        return None
    path = settings["teacher"]
    return module_from_checkpoint(read_checkpoint(path, key="distill.teacher"), path)


def compile_model(module: BloodCellModule, compile_cfg: Any) -> None:
    """`compile: true` (or a dict of torch.compile kwargs) → compile the network in place.

    nn.Module.compile keeps the parameter names, so checkpoints stay loadable without torch.compile.
    """
    if not compile_cfg:
        return
    kwargs = to_plain(compile_cfg) if not isinstance(compile_cfg, bool) else {}
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"compile={compile_cfg!r}: use false, true or a mapping of torch.compile arguments (e.g. {{mode: max-autotune}})."
        )
    module.model.compile(**kwargs)


def instantiate_group(group: DictConfig | None) -> list:
    """Callbacks/loggers: every entry with a _target_, in order; null entries switch one off."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if v is not None and "_target_" in v]


def guard_output_dir(output_dir: Path, resuming: bool) -> None:
    """Never overwrite checkpoints of an earlier run in the same folder unless resuming it."""
    ckpt_dir = output_dir / "checkpoints"
    if not resuming and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise BloodcellError(
            f"{ckpt_dir} already holds checkpoints; refusing to overwrite them. Resume with ckpt_path=last, "
            "or choose another hydra.run.dir."
        )


def keep_logs_before_resume(output_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing logs/metrics.csv; on resume keep it as metrics.before_resume[-N].csv."""
    metrics = output_dir / "logs" / "metrics.csv"
    if metrics.is_file():
        n = sum(1 for _ in metrics.parent.glob("metrics.before_resume*.csv"))
        metrics.rename(metrics.with_name(f"metrics.before_resume{f'-{n}' if n else ''}.csv"))


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """ckpt_path=last | PATH | null → the checkpoint file to resume from (or None); a missing file stops with what to pass."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise BloodcellError(f"ckpt_path=last: {last} does not exist; give hydra.run.dir=<the run folder to resume> or a .ckpt path.")
        return str(last)
    if not Path(ckpt_path).is_file():
        raise BloodcellError(
            f"ckpt_path={ckpt_path}: no such checkpoint file; give a .ckpt path (e.g. <run dir>/checkpoints/last.ckpt), "
            "or ckpt_path=last hydra.run.dir=<run dir>."
        )
    return ckpt_path


def train(cfg: DictConfig) -> float | None:
    """Fit, test and evaluate one configuration; returns cfg.optimized_metric (for sweepers)."""
    check_ddp_launch(cfg.trainer, multirun=hydra_multirun())
    check_not_training_on(cfg.data.get("root"), as_list(cfg.get("crosslab")))  # also fails fast on a missing folder
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    init_from = cfg.get("init_from")
    # a bad init_from file stops before any data work; on resume (ckpt_path) the run's own checkpoint holds the weights
    init_ckpt = read_checkpoint(init_from, key="init_from") if init_from and ckpt_path is None else None
    teacher = load_teacher(cfg)
    guard_output_dir(output_dir, resuming=ckpt_path is not None)
    if ckpt_path is not None:
        keep_logs_before_resume(output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)

    t0 = time.perf_counter()
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    log.info("data: %s, cache %s\n%s", dm.source, dm.cache_folder, dm.counts_table())
    module = build_module(cfg, dm)
    if teacher is not None:  # knowledge distillation: the teacher labels each training batch (bloodcell/models/distill.py)
        module.attach_teacher(teacher, module.distill.teacher)
        d = module.distill
        log.info("distilling from %s (weight %s, temperature %s)", d.teacher, d.weight, d.temperature)
    if ckpt_path is not None:
        check_resume_compatible(ckpt_path, module)
    if init_from:  # provenance, also when resuming: the run's checkpoints, summary and model card name it
        module.init_from = str(Path(init_from).expanduser().resolve())
    if init_ckpt is not None:
        diffs = init_from_checkpoint(init_from, module, init_ckpt)
        del init_ckpt  # the file's optimiser state etc. need not stay in memory during the fit
        log.info("weights from init_from=%s%s", init_from, f" (differs: {'; '.join(diffs)})" if diffs else "")
    elif init_from:  # resuming a second-stage run with its own command: its checkpoint holds the weights
        log.info("resuming from %s; init_from=%s kept as the run's starting point (its weights are not reloaded)", ckpt_path, init_from)
    callbacks = instantiate_group(cfg.get("callbacks")) + model_callbacks(cfg.model)  # staged fine-tuning, EMA
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("data ready in %.1fs; training %s", time.perf_counter() - t0, cfg.model.get("backbone", cfg.model.get("_target_")))

    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - t_fit
    epochs = max(1, trainer.current_epoch)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    best = best or (str(output_dir / "checkpoints" / "last.ckpt") if (output_dir / "checkpoints" / "last.ckpt").is_file() else "")
    if trainer.fast_dev_run and not best:  # fast_dev_run saves nothing: save the weights for the evaluation step
        best = str(output_dir / "checkpoints" / "fast_dev_run.ckpt")
        trainer.save_checkpoint(best)
    summary: dict[str, Any] = {
        "best_checkpoint": best,
        "best_score": float(trainer.checkpoint_callback.best_model_score)
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None
        else None,
        "monitor": cfg.get("optimized_metric"),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(fit_seconds / epochs, 2),
        "train_images": len(dm.splits["train"]),
    }
    if init_from:
        summary["init_from"] = module.init_from
    if cfg.get("test") and len(dm.splits["test"]):
        test_results = trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in (test_results[0] if test_results else {}).items()})
    if not trainer.is_global_zero:  # DDP: other ranks joined fit/test; rank 0 alone evaluates and writes files
        return None
    crosslab = as_list(cfg.get("crosslab")) or []
    if (cfg.get("evaluate") or crosslab) and best and len(dm.splits["test"]):
        from bloodcell.evaluation.runner import evaluate_checkpoint

        result = evaluate_checkpoint(best, None, "test", output_dir / "eval", loader_overrides={"eval_num_workers": 0}, crosslab=crosslab)
        summary["evaluation"] = str(output_dir / "eval" / "metrics.json")
        if "crosslab" in result:
            summary["crosslab"] = result["crosslab"]
    summary["metrics"] = metrics
    write_json(summary, output_dir / "summary.json")
    log.info("model card: %s", write_model_card(cfg, dm, module, summary, output_dir))
    log.info("summary: %s", json.dumps(summary, indent=1))
    metric_name = cfg.get("optimized_metric")
    if metric_name and metric_name not in metrics:
        raise ConfigError(f"optimized_metric={metric_name!r} was not logged; logged: {sorted(metrics)}.")
    if not metric_name:
        return None
    ckpt_cb = trainer.checkpoint_callback
    if summary["best_score"] is not None and ckpt_cb is not None and ckpt_cb.monitor == metric_name:
        return summary["best_score"]  # the score of the checkpoint the run keeps, as the leaderboard ranks it
    return metrics[metric_name]
