"""The machinery of on-device batch augmentation: per-image draws, the op base class, the YAML builder.

Why on the device: at 96 px a fast GPU trains thousands of images per second, more than a few CPU
workers running per-image Albumentations can feed. Batch ops run on the batch after it reached the
device (at the start of `BloodCellModule.training_step`, training batches only), with *independent
random parameters per image* (torchvision's v2 transforms draw one set of parameters per call, i.e.
per batch, which is why the ops here are vectorised by hand). Any other torchvision v2 transform can
still be listed; it is then applied image by image (`PerImage`).

Two rules every op follows:
- **No host-device synchronisation.** No `.item()`, `bool(tensor)`, `if mask.any()`, boolean-mask
  indexing or `torch.bincount`: every op computes its result for the whole batch and keeps it only
  for the images it touches (`torch.where`), so a GPU step never waits for the host
  (tests/test_syncs.py counts such calls).
- **Cost in proportion to use.** An op with probability p runs on a random subset of about p·N images
  (`on_subset`: floor(p·N) images, one more with probability frac(p·N)), gathered and scattered back
  with index tensors; which images comes from torch's RNG on the device, the subset size from Python's
  `random` on the host, so shapes never depend on device values. Each image is touched with probability p.
- **Seeded**: torch's global RNG on the batch's device and Python's `random`, which
  `bloodcell.reproducibility.EpochSeed` both re-seeds before every batch: the same seed gives the same batch.

Config: `conf/batch_augment/*.yaml` → `ops:` list of `_target_` entries. Inputs and outputs are uint8
(0–255) or float (0–1) batches; the dtype is kept. `BatchAugment` converts a uint8 batch to float once,
runs every op in float and rounds back once at the end.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from bloodcell.config import TRUSTED_BATCH_OP_PREFIXES, is_trusted_target, to_plain
from bloodcell.errors import ConfigError


def per_image_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Bool (N,) mask: which images of the batch an op with probability p touches."""
    return torch.rand(x.shape[0], device=x.device) < p


def subset_size(n: int, p: float) -> int:
    """How many of n images an op with probability p touches: floor(p·n), plus one with probability frac(p·n)."""
    k = int(n * p)
    return min(n, k + (1 if random.random() < n * p - k else 0))


def on_subset(x: torch.Tensor, p: float, fn: Callable[[torch.Tensor], torch.Tensor], inplace: bool = False) -> torch.Tensor:
    """`fn` applied to a random subset of about p·N images of the batch (see `subset_size`); the others unchanged."""
    return one_of(x, p, [fn], inplace)


def one_of(x: torch.Tensor, p: float, fns: Sequence[Callable[[torch.Tensor], torch.Tensor]], inplace: bool = False) -> torch.Tensor:
    """A random subset of about p·N images, each given one of `fns` (chosen uniformly on the host); the others unchanged.

    `inplace=True` writes the results into `x` (the caller owns it) instead of a copy of the batch.
    """
    n = x.shape[0]
    k = subset_size(n, p)
    if k == 0:
        return x
    if k == n and len(fns) == 1:
        return fns[0](x)
    counts = [0] * len(fns)
    for _ in range(k):
        counts[random.randrange(len(fns))] += 1
    order = torch.randperm(n, device=x.device)
    out, start = (x if inplace else x.clone()), 0
    for fn, count in zip(fns, counts):
        if count:
            idx = order[start : start + count]
            out.index_copy_(0, idx, fn(x.index_select(0, idx)))
            start += count
    return out


def uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    """(n,) floats drawn uniformly from [low, high) on `device`."""
    return torch.empty(n, device=device).uniform_(float(low), float(high))


def as_range(value: float | Sequence[float], name: str, symmetric: bool = False) -> tuple[float, float]:
    """A YAML range: [low, high], or one number meaning [-v, v] (symmetric) or [v, v]."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ConfigError(f"{name}={list(value)!r}: need low ≤ high.")
    return lo, hi


def check_p(p: float, name: str) -> float:
    """A probability from YAML, checked."""
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{name} p={p}: must be within [0, 1].")
    return float(p)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 0–255 → float 0–1 (contiguous NCHW); float batches are taken as already in 0–1."""
    return x.contiguous().float().div_(255.0) if x.dtype == torch.uint8 else x


def from_unit(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float 0–1 → the caller's dtype (uint8 is rounded and clamped; float is clamped to 0–1)."""
    if dtype == torch.uint8:
        return out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out.clamp(0.0, 1.0).to(dtype)


def affine_theta(forward: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) output→input grid maps of forward maps x ↦ A·x + t (A (N, 2, 2), t (N, 2, 1), grid units).

    The 2×2 inverse is written out: `torch.linalg.inv` checks for singular matrices, a device sync.
    """
    a, b, c, d = forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 0], forward[:, 1, 1]
    inv = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1) / (a * d - b * c).view(-1, 1, 1)
    return torch.cat([inv, -inv @ shift], dim=2)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 grey level (N, 1, H, W) of an RGB batch (the weights OpenCV and PIL use)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


class BatchOp(nn.Module):
    """Base of the float ops: `apply` (float 0–1 NCHW → same, its own per-image parameters) runs on a random subset
    of about p·N images (`on_subset`); the other images keep their pixels. A uint8 batch given directly is
    converted and rounded back."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_p(p, type(self).__name__)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The op on a float 0–1 batch the caller hands over (it may be overwritten)."""
        return on_subset(x, self.p, self.apply, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run(to_unit(x) if x.dtype == torch.uint8 else x.clone(memory_format=torch.contiguous_format))
        return from_unit(out, torch.uint8) if x.dtype == torch.uint8 else out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


class PerImage(nn.Module):
    """Any transform (e.g. a torchvision v2 op) applied image by image, so each image gets its own draw."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(img) for img in x])


class BatchAugment(nn.Sequential):
    """The ops of `batch_augment.ops`, applied in order to a training batch on its device (float inside, input dtype out)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 pixels even inside a bf16/fp16 training step; subset shapes vary, so no cuDNN autotuning per shape
        benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
        try:
            with torch.autocast(x.device.type, enabled=False):
                out = to_unit(x) if x.dtype == torch.uint8 else x.clone(memory_format=torch.contiguous_format)  # ours: ops write into it
                for op in self:
                    out = op.run(out) if isinstance(op, BatchOp) else op(out)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        return from_unit(out, torch.uint8) if x.dtype == torch.uint8 and out.dtype != torch.uint8 else out


def _allowed_targets() -> str:
    return " or ".join(p.rstrip(".") for p in TRUSTED_BATCH_OP_PREFIXES)


def batch_op_list(cfg: Any) -> list:
    """The op entries of a `batch_augment` config: `ops`, then `extra_ops` (or a bare list).

    `extra_ops` lets one preset extend another through its defaults list (conf/batch_augment/pipeline_fourier.yaml
    is pipeline.yaml's ops plus Fourier mixing) instead of copying its list: Hydra replaces lists, it never appends.
    """
    if cfg is None:
        return []
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        return _checked_ops(cfg, "batch_augment.ops")
    return _checked_ops(cfg.get("ops"), "batch_augment.ops") + _checked_ops(cfg.get("extra_ops"), "batch_augment.extra_ops")


def _checked_ops(ops: Any, key: str) -> list:
    if not ops:
        return []
    if isinstance(ops, (Mapping, str)):
        raise ConfigError(f"{key} must be a list of ops (each with a _target_), e.g. conf/batch_augment/basic.yaml.")
    return list(ops)


def build_batch_augment(cfg: Any) -> BatchAugment | None:
    """`{"ops": [...], "extra_ops": [...]}` (or a bare list) → BatchAugment; None / no ops → None (off)."""
    ops = batch_op_list(cfg)
    if not ops:
        return None
    built: list[nn.Module] = []
    for i, op in enumerate(ops):
        target = str(op.get("_target_", "")) if isinstance(op, Mapping) else ""
        if not is_trusted_target(target, TRUSTED_BATCH_OP_PREFIXES):
            raise ConfigError(f"batch_augment.ops[{i}] = {op!r}: each op needs a _target_ in {_allowed_targets()}.")
        try:
            module = instantiate(op, _convert_="all")
        except Exception as exc:
            raise ConfigError(f"batch_augment.ops[{i}] ({target}) could not be built: {exc}") from None
        built.append(module if target.startswith("bloodcell.") else PerImage(module))
    return BatchAugment(*built)
