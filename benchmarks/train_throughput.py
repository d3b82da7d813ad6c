"""Framework overhead: the same training as (a) a hand-written PyTorch loop and (b) bloodcell's Lightning path.

    python benchmarks/train_throughput.py [--models small_cnn,effnet_lite0] [--steps 30] [--warmup 5]
        [--repeats 3] [hydra overrides, e.g. data=pbc128 data.image_size=96 data.batch_size=64]

Both paths use one composed config (conf/train.yaml + overrides): the same datamodule and loader
settings, model, optimizer + schedule, augmentation (CPU `augment` and on-device `batch_augment`),
precision, channels_last and batch size. (b) is `bloodcell.training.train(cfg)` itself, with its
callbacks, loggers and progress bar, limited to `--steps` batches. Images/s count the steps after
`--warmup` (worker start-up excluded); runs are interleaved (a, b, b, a, ...) and medians reported,
because the machine is shared. Also printed, so the bottleneck is visible:
  loader img/s: the train DataLoader alone (workers decoding nothing, only augmenting the uint8 cache);
  model img/s:  training steps on one batch already on the device (no loader).
Peak memory is RSS and PSS summed over the process and its DataLoader workers (PSS counts the shared,
memory-mapped cache once), peak over the framework runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from benchmarks._common import RESULTS, PeakMemory, compose_train_cfg, median, rates, synchronize  # noqa: E402
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


def plain_setup(cfg: DictConfig, device: torch.device, total_steps: int):
    """What a careful hand-written script builds: model, optimizer (timm factory), schedule, normalisation."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
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
    batch_aug = build_batch_augment(cfg.get("batch_augment"))
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


def timed_steps(batches, step, warmup: int, steps: int, device: torch.device) -> dict:
    """Run `steps` steps; img/s over those after `warmup` (same window as StepTimer)."""
    t0, cpu0, images = None, 0.0, 0
    for i, (x, y) in enumerate(batches, start=1):
        step(x, y)
        if i >= warmup:
            synchronize(device)
            if i == warmup:
                t0, cpu0 = time.perf_counter(), time.process_time()
            else:
                images += int(y.shape[0])
        if i >= steps:
            break
    return rates(images, time.perf_counter() - t0, time.process_time() - cpu0)


def run_plain(cfg: DictConfig, dm, device: torch.device, warmup: int, steps: int) -> dict:
    step = plain_setup(cfg, device, steps)
    loader = dm.train_dataloader()
    out = timed_steps(iter(loader), step, warmup, steps, device)
    del loader
    return out


def run_model_only(cfg: DictConfig, dm, device: torch.device, warmup: int, steps: int) -> dict:
    step = plain_setup(cfg, device, steps)
    x, y = next(iter(dm.train_dataloader()))
    x, y = x.to(device), y.to(device)
    return timed_steps(((x, y) for _ in range(steps)), step, warmup, steps, device)


def run_loader_only(dm, warmup: int, steps: int) -> dict:
    return timed_steps(iter(dm.train_dataloader()), lambda x, y: None, warmup, steps, torch.device("cpu"))


def run_framework(cfg: DictConfig, warmup: int, steps: int, label: str) -> dict:
    """bloodcell.training.train(cfg) with a StepTimer callback; outputs in a throw-away folder."""
    cfg = cfg.copy()
    with tempfile.TemporaryDirectory(prefix="bloodcell-bench-") as out:
        OmegaConf.update(cfg, "paths.output_dir", out, force_add=True)
        OmegaConf.update(
            cfg,
            "callbacks.step_timer",
            {"_target_": "benchmarks._common.StepTimer", "warmup_steps": warmup, "label": label},
            force_add=True,
        )
        RESULTS.pop(label, None)
        train(cfg)
    return RESULTS[label]


def bench_model(model: str, overrides: list[str], warmup: int, steps: int, repeats: int) -> dict:
    cfg = compose_train_cfg(
        [
            f"model={model}",
            "test=false",
            "evaluate=false",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={steps}",
            "trainer.limit_val_batches=1",
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
                res = run_plain(cfg, dm, device, warmup, steps) if kind == "plain" else run_framework(cfg, warmup, steps, f"{model}-{r}")
                runs[kind].append(res)
                print(
                    f"  [{model}] repeat {r + 1}/{repeats} {kind:9s} {res['img_per_s']:8.1f} img/s  {res['img_per_cpu_s']:8.1f} img/CPU-s",
                    flush=True,
                )
    plain = [x["img_per_s"] for x in runs["plain"]]
    framework = [x["img_per_s"] for x in runs["framework"]]
    cpu_a, cpu_b = (median([x["img_per_cpu_s"] for x in runs[k]]) for k in ("plain", "framework"))
    loader = median([run_loader_only(dm, warmup, steps)["img_per_s"] for _ in range(max(1, repeats // 2))])
    compute = median([run_model_only(cfg, dm, device, warmup, steps)["img_per_s"] for _ in range(max(1, repeats // 2))])
    a, b = median(plain), median(framework)
    return {
        "model": model,
        "device": str(device),
        "image_size": int(cfg.data.image_size),
        "batch_size": int(cfg.data.batch_size),
        "num_workers": int(cfg.data.num_workers),
        "precision": str(cfg.trainer.precision),
        "train_images": len(dm.splits["train"]),
        "steps": steps,
        "warmup": warmup,
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
        "bottleneck": "loader" if loader < compute else "model",
        "peak_rss_mib": mem.peak["rss_mib"],
        "peak_pss_mib": mem.peak["pss_mib"],
        "max_processes": mem.peak["processes"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small_cnn,effnet_lite0", help="comma-separated conf/model names")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (warmup included)")
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from timing")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per path; medians reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args, overrides = parser.parse_known_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")
    if not any(o.startswith("data=") for o in overrides):
        overrides = ["data=pbc128", *overrides]
    results = []
    for model in args.models.split(","):
        results.append(bench_model(model, overrides, args.warmup, args.steps, args.repeats))
    print(f"\noverrides: {' '.join(overrides)}   torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'model':14s} {'plain':>9s} {'lightning':>10s} {'ratio':>6s} {'cpu_ratio':>9s} "
        f"{'loader':>9s} {'model':>9s} {'bottleneck':>10s} {'peakRSS':>8s} {'peakPSS':>8s}"
    )
    for r in results:
        print(
            f"{r['model']:14s} {r['plain_img_per_s']:9.1f} {r['framework_img_per_s']:10.1f} {r['ratio']:6.3f} {r['cpu_ratio']:9.3f} "
            f"{r['loader_img_per_s']:9.1f} {r['model_img_per_s']:9.1f} {r['bottleneck']:>10s} "
            f"{r['peak_rss_mib']:7.0f}M {r['peak_pss_mib']:7.0f}M"
        )
    print(
        "(img/s of wall time, medians; ratio = lightning / plain; cpu_ratio = the same in images per CPU-second of the training"
        " process; loader = DataLoader alone, model = steps on a resident batch; peak RSS/PSS summed over the process and its workers)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
