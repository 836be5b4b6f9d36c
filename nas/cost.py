"""Exact parameter counts and MACs without allocating or running a real network.

The network is a chain (stem, blocks, head, pooling, classifier), so its figures are sums
over its parts. Each part is built from the very modules training uses, on PyTorch's
``meta`` device (no memory, no compute), and traced with shape-only forward hooks; a part's
figures depend only on its configuration and input size, so they are cached. A search
space holds a few hundred distinct blocks: after the first architectures, costing one
is a few dictionary look-ups.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn

from nas.arch import Arch

__all__ = ["Cost", "model_cost", "count_params", "count_macs"]


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-adds (conv + linear) at one resolution, with a per-stage split."""

    params: int
    macs: int
    resolution: int
    stage_params: tuple[int, ...]
    stage_macs: tuple[int, ...]


@lru_cache(maxsize=65536)
def model_cost(arch: Arch, resolution: int = 224, num_classes: int = 1000) -> Cost:
    """Count parameters and MACs of ``arch`` at ``resolution`` x ``resolution`` input."""
    from nas.builder import block_configs

    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    stem = arch.stem
    params, macs, size = _part("conv", (3, stem.channels, stem.kernel, stem.stride), (resolution, resolution))
    stage_params, stage_macs = [], []
    for block, cfgs in block_configs(arch):
        p_stage = m_stage = 0
        for cfg in cfgs:
            p, m, size = _part(block, replace(cfg, drop_path=0.0), size)
            p_stage, m_stage = p_stage + p, m_stage + m
        stage_params.append(p_stage)
        stage_macs.append(m_stage)
    p_head, m_head, _ = _part("conv", (arch.stages[-1].channels, arch.head.channels, 1, 1), size)
    classifier = arch.head.channels * num_classes
    return Cost(params=params + sum(stage_params) + p_head + classifier + num_classes,
                macs=macs + sum(stage_macs) + m_head + classifier, resolution=resolution,
                stage_params=tuple(stage_params), stage_macs=tuple(stage_macs))


@lru_cache(maxsize=65536)
def _part(kind: str, config, size: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
    """(params, MACs, output height and width) of one part fed ``size`` images."""
    from functools import partial

    from nas.blocks import BLOCK_TYPES, ConvBnAct

    norm = partial(nn.BatchNorm2d, eps=1e-3)
    with torch.device("meta"):
        if kind == "conv":
            in_chs, out_chs, kernel, stride = config
            module = ConvBnAct(in_chs, out_chs, kernel, stride=stride, norm_layer=norm)
        else:
            in_chs = config.in_chs
            module = BLOCK_TYPES[kind](config, norm_layer=norm)
    params = sum(p.numel() for p in module.parameters())
    # BatchNorm keeps shapes and adds no counted MACs, but its meta kernel is slow: trace
    # without it, after the parameters are counted.
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
    macs = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
        macs += output.numel() * k

    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(hook)
    with torch.no_grad():
        out = module.eval()(torch.empty(1, in_chs, *size, device="meta"))
    return params, macs, (int(out.shape[2]), int(out.shape[3]))


def count_params(arch: Arch, num_classes: int = 1000) -> int:
    """Exact number of parameters (BN affine included, BN running stats excluded)."""
    return model_cost(arch, 32, num_classes).params


def count_macs(arch: Arch, resolution: int = 224, num_classes: int = 1000) -> int:
    """Multiply-adds of every conv and linear layer for one image."""
    return model_cost(arch, resolution, num_classes).macs
