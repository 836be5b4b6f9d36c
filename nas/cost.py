"""Exact parameter counts and MACs without allocating or running a real network.

The model is built on PyTorch's ``meta`` device (no memory, no compute) and traced with
shape-only forward hooks, so the figures come from the very modules training uses.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@lru_cache(maxsize=4096)
def model_cost(arch: Arch, resolution: int = 224, num_classes: int = 1000) -> Cost:
    """Count parameters and MACs of ``arch`` at ``resolution`` x ``resolution`` input."""
    from nas.builder import build_model

    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes).eval()
    stage_params = tuple(_params_of(s) for s in model.stages)
    params = _params_of(model)
    # BatchNorm keeps shapes and adds no counted MACs, but its meta kernel is slow (it
    # dominates V2-L at 480): trace without it, after the parameters are counted.
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    macs: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs[module] = output.numel() * k
        else:
            macs[module] = output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.empty(1, 3, resolution, resolution, device="meta"))
    for h in handles:
        h.remove()

    def macs_of(module: nn.Module) -> int:
        return sum(macs.get(m, 0) for m in module.modules())

    return Cost(params=params, macs=macs_of(model), resolution=resolution, stage_params=stage_params,
                stage_macs=tuple(macs_of(s) for s in model.stages))


def _params_of(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_params(arch: Arch, num_classes: int = 1000) -> int:
    """Exact number of parameters (BN affine included, BN running stats excluded)."""
    return model_cost(arch, 32, num_classes).params


def count_macs(arch: Arch, resolution: int = 224, num_classes: int = 1000) -> int:
    """Multiply-adds of every conv and linear layer for one image."""
    return model_cost(arch, resolution, num_classes).macs
