"""Classifier = timm backbone (pooled features) + dense head. One factory for every model config."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

import bloodcell.models.small_cnn  # noqa: F401  (registers bloodcell_small_cnn with timm)
from bloodcell.errors import CheckpointError, ConfigError, suggest
from bloodcell.models.weights import hub_offline, hub_reachable, hub_weights_error, load_weight_source

log = logging.getLogger(__name__)


class DenseHead(nn.Sequential):
    """Linear → ReLU → Dropout per hidden size, then the class layer (reference: 1024 → 128 → 8)."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (1024, 128), dropout: float = 0.3) -> None:
        layers: list[nn.Module] = []
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = int(h)
        layers.append(nn.Linear(prev, num_classes))
        super().__init__(*layers)


class Classifier(nn.Module):
    """Backbone features → head. `mean`/`std` are the backbone's own input normalisation."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError with close names when timm does not know `name`."""
    if not timm.is_model(name):
        raise ConfigError(f"model.backbone={name!r} is not a timm model.{suggest(name, timm.list_models())} (see timm.list_models()).")


def create_backbone(
    name: str, pretrained: bool = False, weights: str | None = None, weights_source: str | None = None, **kwargs
) -> nn.Module:
    """timm model without classifier (num_classes=0 → pooled features), initialised from one weight source.

    Sources (at most one): `weights` a local file (through timm's pretrained_cfg_overlay), `weights_source`
    a named offline source (bloodcell.models.weights), `pretrained` the timm/Hugging Face hub.
    """
    check_backbone_name(name)
    chosen = [k for k, v in (("model.weights", weights), ("model.weights_source", weights_source), ("model.pretrained", pretrained)) if v]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} are both set; choose one weight source and set the other(s) to null/false.")
    if weights_source:
        net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        return load_weight_source(net, weights_source, name)
    overlay = None
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model.weights={weights}: file not found; give the path of a local .pth/.safetensors weights file.")
        overlay = {"file": str(path.resolve())}
        pretrained = True
    offline = bool(pretrained and not weights and not hub_reachable())
    try:
        with hub_offline() if offline else contextlib.nullcontext():
            return timm.create_model(name, pretrained=pretrained, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as exc:
        if pretrained and not weights:
            raise hub_weights_error(name, exc, offline) from None
        if weights:
            raise CheckpointError(f"model.weights={weights} could not be loaded into {name!r}: {exc}") from None
        raise


def build_classifier(
    backbone: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | None = None,
    weights_source: str | None = None,
    head: dict | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
) -> Classifier:
    """Backbone by timm name + DenseHead; the normalisation comes from the backbone's pretrained config."""
    kwargs = {"drop_rate": drop_rate}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    net = create_backbone(backbone, pretrained=pretrained, weights=weights, weights_source=weights_source, **kwargs)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    # pooled-feature width: models with a pre-logits layer (VGG, MobileNetV3) output head_hidden_size, not num_features
    in_features = getattr(net, "head_hidden_size", None) or net.num_features
    head_module = DenseHead(in_features, num_classes, **(head or {}))
    return Classifier(net, head_module, mean, std)
