"""Build a PyTorch model from an :class:`~nas.arch.Arch` (timm's layering: blocks, builder, recipes)."""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from nas.arch import Arch
from nas.blocks import BLOCK_TYPES, BlockConfig, ConvBnAct
from nas.scaling import V1_ROUND_LIMIT, scale_width_depth

__all__ = ["EfficientNet", "build_model", "block_configs"]


class EfficientNet(nn.Module):
    """Stem, stages of blocks, 1x1 head, global pooling, dropout, linear classifier."""

    def __init__(self, arch: Arch, *, num_classes: int, dropout: float, drop_path: float,
                 bn_eps: float, bn_momentum: float, in_chans: int) -> None:
        super().__init__()
        self.arch = arch
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        self.stem = ConvBnAct(in_chans, arch.stem.channels, arch.stem.kernel, stride=arch.stem.stride,
                              norm_layer=norm_layer)
        self.stages = nn.Sequential(*(
            nn.Sequential(*(BLOCK_TYPES[block](cfg, norm_layer=norm_layer) for cfg in cfgs))
            for block, cfgs in block_configs(arch, drop_path=drop_path)
        ))
        self.head = ConvBnAct(arch.stages[-1].channels, arch.head.channels, 1, norm_layer=norm_layer)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(arch.head.channels, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def block_configs(arch: Arch, *, drop_path: float = 0.0) -> list[tuple[str, list[BlockConfig]]]:
    """Per stage, its block token and one config per block; drop-path grows linearly with block index."""
    total, index, in_chs = arch.depth, 0, arch.stem.channels
    stages = []
    for stage in arch.stages:
        cfgs = []
        for r in range(stage.repeats):
            cfgs.append(BlockConfig(in_chs=in_chs, out_chs=stage.channels, kernel=stage.kernel,
                                    stride=stage.stride if r == 0 else 1, exp_ratio=stage.expansion,
                                    se_ratio=stage.se, skip=stage.skip, drop_path=drop_path * index / total))
            in_chs, index = stage.channels, index + 1
        stages.append((stage.block, cfgs))
    return stages


def build_model(arch: Arch | str, num_classes: int = 1000, *, width_mult: float = 1.0, depth_mult: float = 1.0,
                round_limit: float = V1_ROUND_LIMIT, dropout: float = 0.2, drop_path: float = 0.0,
                bn_eps: float = 1e-3, bn_momentum: float = 0.1, in_chans: int = 3) -> EfficientNet:
    """Build the network an architecture describes.

    Args:
        arch: an :class:`Arch` or an arch string.
        num_classes: classifier outputs.
        width_mult, depth_mult: compound scaling applied first (``round_limit`` 0.9 is the
            EfficientNet rule, 0 the V2 rule).
        dropout: before the classifier. drop_path: stochastic depth rate of the last block.
        bn_eps: 1e-3 as in the official TF implementations. bn_momentum: PyTorch convention.
    """
    from nas.arch import parse_arch

    if isinstance(arch, str):
        arch = parse_arch(arch)
    if not isinstance(arch, Arch):
        raise TypeError(f"build_model needs an Arch or an arch string, got {type(arch).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if width_mult != 1.0 or depth_mult != 1.0:
        arch = scale_width_depth(arch, width=width_mult, depth=depth_mult, round_limit=round_limit)
    return EfficientNet(arch, num_classes=num_classes, dropout=dropout, drop_path=drop_path,
                        bn_eps=bn_eps, bn_momentum=bn_momentum, in_chans=in_chans)


def _init_weights(model: nn.Module) -> None:
    # torchvision's EfficientNet initialisation (He fan-out for convs, uniform classifier).
    if next(model.parameters()).is_meta:
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
