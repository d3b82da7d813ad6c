"""A small CNN baseline (the reference study's custom network), registered with timm's model registry."""
from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


class SmallCNN(nn.Module):
    """Four conv–BN–ReLU–maxpool blocks and global average pooling (~0.14 GFLOPs at 96 px).

    Follows timm's conventions (`num_features`, `num_classes=0` → pooled features,
    `pretrained_cfg` with mean/std, `feature_info`) so the same head/freeze code serves it.
    """

    def __init__(
        self, num_classes: int = 8, channels: tuple[int, ...] = (32, 64, 128, 256), drop_rate: float = 0.0, in_chans: int = 3, **_: object
    ) -> None:
        super().__init__()
        blocks = []
        prev = in_chans
        self.feature_info = []
        for i, ch in enumerate(channels):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, ch, 3, padding=1, bias=False),
                    nn.BatchNorm2d(ch),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            self.feature_info.append({"num_chs": ch, "reduction": 2 ** (i + 1), "module": f"blocks.{i}"})
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.num_features = prev
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "architecture": "bloodcell_small_cnn"}

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^blocks\.0", "blocks": [(r"^blocks\.(\d+)", None)]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def bloodcell_small_cnn(pretrained: bool = False, **kwargs: object) -> SmallCNN:
    """timm registry entry for the small CNN baseline, so `model.backbone=bloodcell_small_cnn` works like any timm name."""
    if pretrained:
        raise ValueError("bloodcell_small_cnn has no pretrained weights; set model.pretrained=false.")
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg")}
    return SmallCNN(**kwargs)
