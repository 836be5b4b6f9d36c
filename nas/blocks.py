"""MBConv and Fused-MBConv blocks, as the official and reference implementations build them.

Every optional part is an ``nn.Identity`` chosen in ``__init__``, so ``forward`` is flat.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nas.scaling import make_divisible

__all__ = ["BlockConfig", "ConvBnAct", "SqueezeExcite", "StochasticDepth", "MBConv", "FusedMBConv", "BLOCK_TYPES"]

NormLayer = Callable[[int], nn.Module]


@dataclass(frozen=True)
class BlockConfig:
    """One block instance: the stage's settings plus this block's input and drop-path rate."""

    in_chs: int
    out_chs: int
    kernel: int
    stride: int
    exp_ratio: float
    se_ratio: float
    skip: bool
    drop_path: float = 0.0

    @property
    def has_skip(self) -> bool:
        return self.skip and self.stride == 1 and self.in_chs == self.out_chs

    @property
    def mid_chs(self) -> int:
        return self.in_chs if self.exp_ratio == 1 else make_divisible(self.in_chs * self.exp_ratio)

    @property
    def se_chs(self) -> int:
        # SE squeezes relative to the block's *input* channels (EfficientNet, torchvision).
        return max(1, int(self.in_chs * self.se_ratio))


class ConvBnAct(nn.Sequential):
    """Conv (same padding, no bias) + BatchNorm + optional activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, *, stride: int = 1, groups: int = 1,
                 norm_layer: NormLayer, act: bool = True) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            norm_layer(out_chs),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class SqueezeExcite(nn.Module):
    """Channel attention: pool, reduce (SiLU), expand, sigmoid gate."""

    def __init__(self, chs: int, rd_chs: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1)
        self.act = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.conv_expand(self.act(self.conv_reduce(s))).sigmoid()


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per sample during training (Huang et al. 2016)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
        return x * mask / keep


class _Residual(nn.Module):
    """Shared tail: the block body plus the residual rule and stochastic depth."""

    body: nn.Sequential

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.has_skip = cfg.has_skip
        self.drop_path = StochasticDepth(cfg.drop_path) if cfg.has_skip and cfg.drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + self.drop_path(out) if self.has_skip else out


class MBConv(_Residual):
    """Inverted residual: 1x1 expand (absent when e = 1), depthwise KxK, SE, 1x1 project."""

    def __init__(self, cfg: BlockConfig, *, norm_layer: NormLayer) -> None:
        super().__init__(cfg)
        mid = cfg.mid_chs
        self.body = nn.Sequential(
            ConvBnAct(cfg.in_chs, mid, 1, norm_layer=norm_layer) if mid != cfg.in_chs else nn.Identity(),
            ConvBnAct(mid, mid, cfg.kernel, stride=cfg.stride, groups=mid, norm_layer=norm_layer),
            SqueezeExcite(mid, cfg.se_chs) if cfg.se_ratio else nn.Identity(),
            ConvBnAct(mid, cfg.out_chs, 1, norm_layer=norm_layer, act=False),
        )


class FusedMBConv(_Residual):
    """Fused-MBConv: KxK expand conv, optional SE, 1x1 project; e = 1 is one KxK conv + BN + act."""

    def __init__(self, cfg: BlockConfig, *, norm_layer: NormLayer) -> None:
        super().__init__(cfg)
        if cfg.exp_ratio == 1:
            self.body = nn.Sequential(
                ConvBnAct(cfg.in_chs, cfg.out_chs, cfg.kernel, stride=cfg.stride, norm_layer=norm_layer),
                SqueezeExcite(cfg.out_chs, cfg.se_chs) if cfg.se_ratio else nn.Identity(),
            )
        else:
            mid = cfg.mid_chs
            self.body = nn.Sequential(
                ConvBnAct(cfg.in_chs, mid, cfg.kernel, stride=cfg.stride, norm_layer=norm_layer),
                SqueezeExcite(mid, cfg.se_chs) if cfg.se_ratio else nn.Identity(),
                ConvBnAct(mid, cfg.out_chs, 1, norm_layer=norm_layer, act=False),
            )


# The one place that maps an arch token to its block class.
BLOCK_TYPES: dict[str, type[_Residual]] = {"mb": MBConv, "fmb": FusedMBConv}
