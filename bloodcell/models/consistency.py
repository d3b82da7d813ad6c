"""Consistency between each training image and its batch-augmented copy (`consistency.weight`).

FACT (Xu et al., "A Fourier-based framework for domain generalization", CVPR 2021) trains on the original and the
amplitude-mixed view of every image and asks the two predictions to agree; AugMix (Hendrycks et al., ICLR 2020) does
the same with a Jensen-Shannon term between views. Agreement asks the network to read each image's class from what the
batch augmentation keeps (for Fourier mixing: the phase, i.e. shape) rather than from the style it swaps out. Here the
student's two views are compared with each other (AugMix's form) instead of FACT's EMA co-teacher: no third forward pass.
Cost: every step runs a batch twice the configured size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bloodcell.config import require_keys
from bloodcell.errors import ConfigError

CONSISTENCY_KEYS = ("weight",)  # conf/train.yaml consistency.*


@dataclass(frozen=True)
class ConsistencySettings:
    """consistency.* of conf/train.yaml: loss = task loss on both views + weight · JS(clean view ‖ augmented view)."""

    weight: float = 0.0

    @classmethod
    def from_cfg(cls, cfg: dict | None) -> ConsistencySettings:
        if not cfg:
            return cls()
        settings = cls(float(require_keys(cfg, CONSISTENCY_KEYS, "consistency")["weight"]))
        if settings.weight < 0:
            raise ConfigError(f"consistency.weight={settings.weight} must be ≥ 0 (0 = off; AugMix uses 12).")
        return settings

    def check_fits(self, has_batch_augment: bool, has_jsd: bool) -> None:
        """The second view is made by batch_augment; AugMix's own JSD views are a different three-view scheme."""
        if not self.weight:
            return
        if not has_batch_augment:
            raise ConfigError(f"consistency.weight={self.weight} compares each image with its batch-augmented copy, but "
                              "batch_augment has no ops; choose one (e.g. batch_augment=fourier) or set consistency.weight=0.")
        if has_jsd:
            raise ConfigError("consistency.weight > 0 cannot be combined with augment.jsd.enabled=true (two consistency "
                              "schemes on different views); switch one off.")


def stack_views(clean: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    """(clean, augmented) stacked on channels: CutMix/MixUp, which act on every channel alike, then mix both views alike."""
    return torch.cat([clean, augmented], dim=1)


def views_as_batch(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, channels_last: bool = False):
    """Channel-stacked views → one batch of 2N (clean first), labels and (soft) targets repeated to match."""
    x = torch.cat(x.split(x.shape[1] // 2, dim=1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    repeat = (2,) + (1,) * (target.ndim - 1)
    return x, y.repeat(2), target.repeat(*repeat)


def js_consistency(logits: torch.Tensor, views: int = 2) -> torch.Tensor:
    """Jensen-Shannon divergence among the views' softmax predictions (logits: the views concatenated on the batch).

    The mean over views of KL(p_view ‖ mixture), mixture clamped as in timm's JsdCrossEntropy; mean over images.
    """
    probs = [F.softmax(part.float(), dim=-1) for part in logits.chunk(views)]
    log_mixture = torch.stack(probs).mean(dim=0).clamp(1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / views
