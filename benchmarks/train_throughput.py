"""Framework overhead: the same training as (a) a hand-written PyTorch loop and (b) bloodcell's Lightning path.

    python benchmarks/train_throughput.py [--models small_cnn,effnet_lite0] [--steps 30] [--warmup 5]
        [--repeats 3] [hydra overrides, e.g. data=pbc128 data.image_size=96 data.batch_size=64]

Both paths use one composed config (conf/train.yaml + overrides): the same datamodule and loader
settings, model, optimizer + schedule, augmentation (CPU `augment` and on-device `batch_augment`),
precision, channels_last and batch size. (b) is `bloodcell.training.train(cfg)` itself, with its
callbacks, loggers and progress bar, limited to `--steps` batches. Images/s count the steps after
`--warmup` (worker start-up excluded), timed with one device synchronisation at each end of the window
and none inside it, in both paths (steady state on a GPU: `--steps 300 --warmup 20`, ≥ 200 timed steps);
runs are interleaved (a, b, b, a, ...) and medians reported, because the machine is shared. Also
printed, so the bottleneck is visible:
  loader img/s: the train DataLoader alone (workers decoding nothing, only augmenting the uint8 cache);
  model img/s:  training steps on one batch already on the device (no loader), batch ops included;
  model_noaug:  the same without the batch ops (`batch_augment`), the reference of framework/model_noaug.
Peak memory is RSS and PSS summed over the process and its DataLoader workers (PSS counts the shared,
memory-mapped cache once), peak over the framework runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from benchmarks._common import PROFILES, RESULTS, HostProfile, PeakMemory, Windows, compose_train_cfg, median  # noqa: E402
from bloodcell.augment.gpu import build_batch_augment  # noqa: E402
from bloodcell.config import to_plain  # noqa: E402
from bloodcell.module import build_model_from_cfg  # noqa: E402
from bloodcell.optim import warmup_cosine  # noqa: E402
from bloodcell.training import build_datamodule, train  # noqa: E402

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def pick_device(cfg: DictConfig) -> torch.device:
    accel = str(cfg.trainer.accelerator)
    if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def plain_setup(cfg: DictConfig, device: torch.device, total_steps: int, batch_augment: bool = True):
    """What a careful hand-written script builds: model, optimizer (timm factory), schedule, normalisation."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark"))  # what the Trainer sets from the same key
    model = build_model_from_cfg(to_plain(cfg.model), 8).to(device)
    channels_last = bool(cfg.get("channels_last"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        model.compile(**({} if cfg.compile is True else to_plain(cfg.compile)))
    opt_cfg = to_plain(cfg.optim.optimizer)
    optimizer = instantiate(opt_cfg, _partial_=True)(model)
    sched = to_plain(cfg.optim.get("scheduler") or {})
    scheduler = None
    if sched and sched.get("name") not in (None, "none"):
        scheduler = warmup_cosine(optimizer, total_steps, 0, float(sched["min_lr_ratio"]), float(sched["warmup_start_ratio"]))
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
    batch_aug = build_batch_augment(cfg.get("batch_augment")) if batch_augment else None
    autocast_dtype = AUTOCAST.get(str(cfg.trainer.precision))
    smoothing = float(cfg.loss.label_smoothing)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if batch_aug is not None:
            x = batch_aug(x)
        x = (x.float() - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    model.train()
    return step


def epochs_of(loader, steps: int):
    """(index in epoch, epoch, x, y, last in epoch) for `steps` steps over as many epochs as needed."""
    done, epoch = 0, 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        n = len(loader)
        for i, (x, y) in enumerate(loader):
            done += 1
            yield i, epoch, x, y, i + 1 == n or done >= steps
            if done >= steps:
                return
        epoch += 1


def timed_steps(batches, step, warmup: int, epoch_warmup: int, device: torch.device) -> dict:
    """Run the steps; img/s over the steady-state windows (benchmarks._common.Windows, as StepTimer)."""
    windows = Windows(warmup, epoch_warmup, device)
    for i, epoch, x, y, last in batches:
        step(x, y)
        windows.after_step(i, epoch, int(y.shape[0]), last)
    return windows.result()


def run_plain(cfg: DictConfig, dm, device: torch.device, warmup: int, steps: int, epoch_warmup: int) -> dict:
    step = plain_setup(cfg, device, steps)
    return timed_steps(epochs_of(dm.train_dataloader(), steps), step, warmup, epoch_warmup, device)


def run_model_only(cfg: DictConfig, dm, device: torch.device, warmup: int, steps: int, batch_augment: bool = True) -> dict:
    step = plain_setup(cfg, device, steps, batch_augment)
    x, y = next(iter(dm.train_dataloader()))
    x, y = x.to(device), y.to(device)
    return timed_steps(((i, 0, x, y, i + 1 == steps) for i in range(steps)), step, warmup, warmup, device)


def run_loader_only(dm, warmup: int, steps: int, epoch_warmup: int) -> dict:
    return timed_steps(epochs_of(dm.train_dataloader(), steps), lambda x, y: None, warmup, epoch_warmup, torch.device("cpu"))


def run_framework(cfg: DictConfig, warmup: int, epoch_warmup: int, label: str, profile_steps: int = 0) -> dict:
    """bloodcell.training.train(cfg) with a StepTimer callback (and a HostProfileCallback); outputs in a throw-away folder."""
    cfg = cfg.copy()
    with tempfile.TemporaryDirectory(prefix="bloodcell-bench-") as out:
        OmegaConf.update(cfg, "paths.output_dir", out, force_add=True)
        OmegaConf.update(
            cfg,
            "callbacks.step_timer",
            {"_target_": "benchmarks._common.StepTimer", "warmup_steps": warmup, "label": label, "epoch_warmup": epoch_warmup},
            force_add=True,
        )
        if profile_steps:
            profiler = {"_target_": "benchmarks._common.HostProfileCallback", "label": label, "start": warmup, "steps": profile_steps}
            OmegaConf.update(cfg, "callbacks.host_profile", profiler, force_add=True)
        RESULTS.pop(label, None)
        train(cfg)
    return RESULTS[label]


def profile_paths(cfg: DictConfig, dm, device: torch.device, warmup: int, steps: int, out: Path, model: str) -> dict:
    """Host Python profile of `steps` steady-state steps in each path (after `warmup`): where the host time goes."""
    plain = HostProfile(warmup, steps)
    step = plain_setup(cfg, device, warmup + steps)
    for _, _, x, y, _ in epochs_of(dm.train_dataloader(), warmup + steps):
        plain.before_step()
        step(x, y)
        plain.after_step()
    label = f"{model}-profile"
    run_framework(_profile_cfg(cfg, warmup + steps), warmup, 2, label, steps)
    return {
        "plain": plain.report(out / f"profile_{model}_plain.txt", f"{model} plain loop"),
        "framework": PROFILES[label].report(out / f"profile_{model}_framework.txt", f"{model} bloodcell/Lightning"),
    }


def _profile_cfg(cfg: DictConfig, steps: int) -> DictConfig:
    cfg = cfg.copy()
    OmegaConf.update(cfg, "trainer.max_steps", steps)
    return cfg


def bench_model(model: str, overrides: list[str], warmup: int, steps: int, repeats: int, epoch_warmup: int = 2,
                profile_steps: int = 0, profile_dir: Path | None = None) -> dict:
    cfg = compose_train_cfg(
        [
            f"model={model}",
            "test=false",
            "evaluate=false",
            "trainer.max_epochs=-1",  # as many epochs as --steps needs; each epoch's boundary falls outside the timing
            f"trainer.max_steps={steps}",
            "trainer.max_time=null",
            "trainer.limit_val_batches=1",
            "callbacks.early_stopping=null",  # a run may stop mid-epoch (max_steps), before any validation metric exists
            "optimized_metric=null",
            # the plain loop trains every layer with no weight averaging: the framework must do the same work
            # (a staged config's frozen first phase would otherwise make the framework look several times faster)
            "model.freeze=false",
            "model.ema.enabled=false",
            *overrides,
        ]
    )
    device = pick_device(cfg)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    runs: dict[str, list[dict]] = {"plain": [], "framework": []}
    with PeakMemory() as mem:
        for r in range(repeats):
            order = ("plain", "framework") if r % 2 == 0 else ("framework", "plain")
            for kind in order:
                res = (run_plain(cfg, dm, device, warmup, steps, epoch_warmup) if kind == "plain"
                       else run_framework(cfg, warmup, epoch_warmup, f"{model}-{r}"))
                runs[kind].append(res)
                print(
                    f"  [{model}] repeat {r + 1}/{repeats} {kind:9s} {res['img_per_s']:8.1f} img/s  {res['img_per_cpu_s']:8.1f} img/CPU-s",
                    flush=True,
                )
    plain = [x["img_per_s"] for x in runs["plain"]]
    framework = [x["img_per_s"] for x in runs["framework"]]
    cpu_a, cpu_b = (median([x["img_per_cpu_s"] for x in runs[k]]) for k in ("plain", "framework"))
    loader = median([run_loader_only(dm, warmup, steps, epoch_warmup)["img_per_s"] for _ in range(max(1, repeats // 2))])
    compute = median([run_model_only(cfg, dm, device, warmup, steps)["img_per_s"] for _ in range(max(1, repeats // 2))])
    has_batch_ops = build_batch_augment(cfg.get("batch_augment")) is not None
    bare = (median([run_model_only(cfg, dm, device, warmup, steps, False)["img_per_s"] for _ in range(max(1, repeats // 2))])
            if has_batch_ops else compute)
    a, b = median(plain), median(framework)
    profiles = profile_paths(cfg, dm, device, warmup, profile_steps, profile_dir or Path("."), model) if profile_steps else None
    return {
        "host_profile": profiles,
        "model": model,
        "device": str(device),
        "image_size": int(cfg.data.image_size),
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.num_workers),
        "precision": str(cfg.trainer.precision),
        "train_images": len(dm.splits["train"]),
        "steps": steps,
        "warmup": warmup,
        "epoch_warmup": epoch_warmup,
        "timed_steps": [x["timed_steps"] for x in runs["plain"] + runs["framework"]],
        "repeats": repeats,
        "plain_img_per_s": a,
        "framework_img_per_s": b,
        "ratio": b / a,
        "plain_img_per_cpu_s": cpu_a,
        "framework_img_per_cpu_s": cpu_b,
        "cpu_ratio": cpu_b / cpu_a,
        "plain_runs": runs["plain"],
        "framework_runs": runs["framework"],
        "loader_img_per_s": loader,
        "model_img_per_s": compute,
        "model_noaug_img_per_s": bare,  # steps on a resident batch without the batch ops
        "framework_vs_model_noaug": b / bare,  # issue 13's target with batch_augment=pipeline: ≥ 0.9 on a GPU
        "bottleneck": "loader" if loader < compute else "model",
        "peak_rss_mib": mem.peak["rss_mib"],
        "peak_pss_mib": mem.peak["pss_mib"],
        "max_processes": mem.peak["processes"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small_cnn,effnet_lite0", help="comma-separated conf/model names")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (warmup included)")
    parser.add_argument("--warmup", type=int, default=5, help="first-epoch steps excluded from timing")
    parser.add_argument("--epoch-warmup", type=int, default=2, help="steps excluded at the start of each later epoch")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per path; medians reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="then cProfile the host over this many steady steps in each path (profile_<model>_*.txt)")
    parser.add_argument("--profile-dir", type=Path, default=None, help="where the profiles go (default: beside --json)")
    args, overrides = parser.parse_known_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")
    if not any(o.startswith("data=") for o in overrides):
        overrides = ["data=pbc128", *overrides]
    results = []
    for model in args.models.split(","):
        profile_dir = args.profile_dir or (args.json.parent if args.json else Path("."))
        results.append(bench_model(model, overrides, args.warmup, args.steps, args.repeats, args.epoch_warmup,
                                   args.profile_steps, profile_dir))
    print(f"\noverrides: {' '.join(overrides)}   torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'model':14s} {'plain':>9s} {'lightning':>10s} {'ratio':>6s} {'cpu_ratio':>9s} "
        f"{'loader':>9s} {'model':>9s} {'m_noaug':>9s} {'fw/noaug':>8s} {'bottleneck':>10s} {'peakRSS':>8s} {'peakPSS':>8s}"
    )
    for r in results:
        print(
            f"{r['model']:14s} {r['plain_img_per_s']:9.1f} {r['framework_img_per_s']:10.1f} {r['ratio']:6.3f} {r['cpu_ratio']:9.3f} "
            f"{r['loader_img_per_s']:9.1f} {r['model_img_per_s']:9.1f} {r['model_noaug_img_per_s']:9.1f} "
            f"{r['framework_vs_model_noaug']:8.3f} {r['bottleneck']:>10s} "
            f"{r['peak_rss_mib']:7.0f}M {r['peak_pss_mib']:7.0f}M"
        )
    print(
        "(img/s of wall time, medians; ratio = lightning / plain; cpu_ratio = the same in images per CPU-second of the training"
        " process; loader = DataLoader alone, model = steps on a resident batch; peak RSS/PSS summed over the process and its workers)"
    )
    for r in results:
        if r["host_profile"]:
            p, f = (r["host_profile"][k]["profiled_ms_per_step"] for k in ("plain", "framework"))
            print(f"host profile {r['model']}: plain {p:.2f} ms/step, framework {f:.2f} ms/step (profiled; tables in "
                  f"{Path(r['host_profile']['framework']['profile']).parent})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
