"""Channel and depth rounding, and compound scaling of an :class:`~nas.arch.Arch`.

The one place where widths and depths are rounded; every builder path goes through it.
"""
from __future__ import annotations

import math
from dataclasses import replace

from nas.arch import Arch, Head, Stem

__all__ = ["V1_ROUND_LIMIT", "V2_ROUND_LIMIT", "make_divisible", "scale_depth", "scale_arch"]

# EfficientNet (V1) bumps a rounded width up by one divisor when rounding lost more than
# 10 %; the V2 family rounds to the nearest multiple of 8 (timm's round_limit=0).
V1_ROUND_LIMIT = 0.9
V2_ROUND_LIMIT = 0.0


def make_divisible(value: float, divisor: int = 8, *, round_limit: float = V1_ROUND_LIMIT) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``).

    >>> make_divisible(35.2), make_divisible(28.8), make_divisible(17.6, round_limit=0.0)
    (32, 32, 16)
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def scale_depth(repeats: int, multiplier: float) -> int:
    """Blocks of a stage after depth scaling: rounded up, as the reference builders do."""
    return int(math.ceil(repeats * multiplier))


def scale_arch(arch: Arch, *, width: float = 1.0, depth: float = 1.0,
               round_limit: float = V1_ROUND_LIMIT) -> Arch:
    """Compound-scale an architecture: every width through ``make_divisible``, depth per stage.

    Widths are left untouched at ``width == 1`` so that arbitrary user channel counts survive.
    """
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth multipliers must be > 0, got width={width}, depth={depth}")

    def chs(c: int) -> int:
        return c if width == 1.0 else make_divisible(c * width, round_limit=round_limit)

    stages = tuple(replace(s, channels=chs(s.channels), repeats=scale_depth(s.repeats, depth)) for s in arch.stages)
    return Arch(stem=Stem(arch.stem.kernel, arch.stem.stride, chs(arch.stem.channels)),
                stages=stages, head=Head(chs(arch.head.channels)))
