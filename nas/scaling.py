"""Channel and depth rounding, and compound scaling of an :class:`~nas.arch.Arch`.

The one place where widths, depths and scaled resolutions are rounded; every builder
path goes through it. :func:`scale_arch` is EfficientNet's compound scaling of any
architecture: either by a coefficient ``phi`` (depth ``alpha**phi``, width ``beta**phi``,
resolution ``gamma**phi``) or by explicit multipliers, as the B1..B7 table gives them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nas.arch import Arch, Head, Stem, format_number

__all__ = ["V1_ROUND_LIMIT", "V2_ROUND_LIMIT", "FAMILIES", "ALPHA", "BETA", "GAMMA", "MAX_RESOLUTION",
           "RESOLUTION_DIVISOR",
           "ScaledArch", "arch_family", "make_divisible", "scale_depth", "scale_resolution",
           "scale_width_depth", "scale_arch"]

# EfficientNet (V1) bumps a rounded width up by one divisor when rounding lost more than
# 10 %; the V2 family rounds to the nearest multiple of 8 (timm's round_limit=0).
V1_ROUND_LIMIT = 0.9
V2_ROUND_LIMIT = 0.0
#: Family name -> the ``round_limit`` of its width rounding.
FAMILIES = {"efficientnet": V1_ROUND_LIMIT, "efficientnetv2": V2_ROUND_LIMIT}
#: EfficientNet's compound coefficients (Tan & Le 2019, grid-searched at phi = 1).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
#: A scaled resolution is a multiple of this (as channels are of 8).
RESOLUTION_DIVISOR = 8
#: The largest input resolution accepted anywhere (B7 uses 600); far larger inputs
#: overflow torch's size arithmetic even on the meta device.
MAX_RESOLUTION = 8192
# Depth rounds up, but a product that floating point puts a hair above a whole number
# (25 x 2.2 = 55.00000000000001) means that whole number, not the next one.
_DEPTH_EPS = 1e-9


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
    """Blocks of a stage after depth scaling: rounded up, as the reference builders do.

    >>> scale_depth(3, 1.1), scale_depth(25, 2.2)
    (4, 55)
    """
    return int(math.ceil(repeats * multiplier - _DEPTH_EPS))


def scale_resolution(base: int, multiplier: float) -> int:
    """``base * multiplier`` to the nearest multiple of ``RESOLUTION_DIVISOR`` (ties up).

    A multiplier of exactly 1 keeps ``base`` as it is (like widths at width 1), so
    ``phi = 0`` changes nothing.

    >>> scale_resolution(224, 1.15), scale_resolution(224, 1.15 ** 2), scale_resolution(260, 1.0)
    (256, 296, 260)
    """
    if multiplier == 1.0:
        return base
    return max(RESOLUTION_DIVISOR, math.floor(base * multiplier / RESOLUTION_DIVISOR + 0.5) * RESOLUTION_DIVISOR)


def arch_family(arch: Arch) -> str:
    """``"efficientnetv2"`` when any stage is Fused-MBConv, else ``"efficientnet"``.

    The family decides the width rounding: only EfficientNetV2 uses Fused-MBConv, and the
    V1 networks (and MnasNet-style ones) are all MBConv.
    """
    return "efficientnetv2" if any(s.block == "fmb" for s in arch.stages) else "efficientnet"


def scale_width_depth(arch: Arch, *, width: float = 1.0, depth: float = 1.0,
                      round_limit: float = V1_ROUND_LIMIT) -> Arch:
    """Every width (stem, stages, head) through ``make_divisible``, every stage's depth up.

    Widths are left untouched at ``width == 1`` so that arbitrary user channel counts survive.

    Raises:
        ValueError: for a multiplier that is not > 0, or a result out of the arch bounds.
    """
    if not (width > 0 and depth > 0 and math.isfinite(width) and math.isfinite(depth)):
        raise ValueError(f"width and depth multipliers must be finite and > 0, got width={width}, depth={depth}")

    def chs(c: int) -> int:
        return c if width == 1.0 else make_divisible(c * width, round_limit=round_limit)

    stages = tuple(replace(s, channels=chs(s.channels), repeats=scale_depth(s.repeats, depth)) for s in arch.stages)
    return Arch(stem=Stem(arch.stem.kernel, arch.stem.stride, chs(arch.stem.channels)),
                stages=stages, head=Head(chs(arch.head.channels)))


@dataclass(frozen=True)
class ScaledArch:
    """The result of :func:`scale_arch`.

    Attributes:
        arch: the scaled architecture.
        resolution: the input resolution to train and evaluate it at.
        width: the width multiplier applied.
        depth: the depth multiplier applied.
        family: whose width rounding was used (a key of ``FAMILIES``).
    """

    arch: Arch
    resolution: int
    width: float
    depth: float
    family: str


def scale_arch(arch: Arch, *, phi: float | None = None, alpha: float = ALPHA, beta: float = BETA,
               gamma: float = GAMMA, width: float | None = None, depth: float | None = None,
               resolution: int | None = None, base_resolution: int = 224, max_resolution: int | None = None,
               family: str | None = None) -> ScaledArch:
    """Compound-scale ``arch`` by ``phi``, or by explicit width, depth and resolution.

    With ``phi``: depth ``alpha**phi``, width ``beta**phi``, resolution
    ``base_resolution * gamma**phi`` rounded to the nearest multiple of 8. Explicitly:
    ``width`` and ``depth`` multipliers (default 1) and ``resolution`` in pixels (default
    ``base_resolution``). Either way ``max_resolution`` caps the resolution. Each stage's
    depth is rounded up; widths (stem, stages, head) go through :func:`make_divisible`
    with the family's rule: ``family`` when given, else :func:`arch_family` — V2 (nearest
    multiple of 8) when the arch has a Fused-MBConv stage, else V1 (the 10 % rule).

    Scaling ``efficientnet_b0`` by ``width=1.1, depth=1.2, resolution=260`` gives
    ``efficientnet_b2`` exactly, and likewise for B1..B7 with the coefficients in docs/design.md.

    Args:
        arch: the architecture to scale.
        phi: the compound coefficient (>= 0); excludes width, depth and resolution.
        alpha, beta, gamma: depth, width and resolution bases of ``phi`` (each >= 1).
        width, depth: multipliers (> 0) when ``phi`` is not given.
        resolution: the resolution in pixels when ``phi`` is not given.
        base_resolution: ``arch``'s own resolution, which ``phi`` scales.
        max_resolution: an upper bound on the resulting resolution.
        family: ``"efficientnet"`` or ``"efficientnetv2"``; None infers it from ``arch``.

    Raises:
        ValueError: naming the argument and its value, when both forms or neither are
            given, or the scaled architecture is out of the arch bounds.
    """
    explicit = {"width": width, "depth": depth, "resolution": resolution}
    given = [name for name, value in explicit.items() if value is not None]
    if phi is not None and given:
        raise ValueError(f"give either phi or width/depth/resolution, not both (got phi and {', '.join(given)})")
    if phi is None and not given:
        raise ValueError("give phi, or width/depth/resolution")
    _check_pixels("base_resolution", base_resolution)
    if max_resolution is not None:
        _check_pixels("max_resolution", max_resolution)
    if family is None:
        family = arch_family(arch)
    elif family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")

    if phi is not None:
        _check_number("phi", phi, low=0.0, inclusive=True)
        for name, base in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            _check_number(name, base, low=1.0, inclusive=True)
        try:
            depth_mult, width_mult, res_mult = alpha ** phi, beta ** phi, gamma ** phi
        except OverflowError:
            raise ValueError(f"phi {format_number(phi)} is too large") from None
        how = f"phi {format_number(phi)}"
    else:
        width_mult = 1.0 if width is None else width
        depth_mult = 1.0 if depth is None else depth
        _check_number("width", width_mult, low=0.0, inclusive=False)
        _check_number("depth", depth_mult, low=0.0, inclusive=False)
        if resolution is not None:
            _check_pixels("resolution", resolution)
        how = f"width {format_number(width_mult)} and depth {format_number(depth_mult)}"
    try:
        scaled = scale_width_depth(arch, width=width_mult, depth=depth_mult, round_limit=FAMILIES[family])
    except ValueError as err:
        raise ValueError(f"scaling by {how} leaves the architecture bounds: {err}") from None
    if phi is not None:
        pixels = scale_resolution(base_resolution, res_mult)
    else:
        pixels = base_resolution if resolution is None else resolution
    if max_resolution is not None:
        pixels = min(pixels, max_resolution)  # EfficientNetV2 caps its largest models at 480
    if pixels > MAX_RESOLUTION:
        raise ValueError(f"scaling by {how} gives resolution {pixels:,}, above {MAX_RESOLUTION}; "
                         f"lower it or cap it with max_resolution")
    return ScaledArch(arch=scaled, resolution=pixels, width=width_mult, depth=depth_mult, family=family)


def _check_number(name: str, value: float, *, low: float, inclusive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= low if inclusive else value > low)
    if not ok:
        shown = format_number(value) if isinstance(value, (int, float)) else repr(value)
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {format_number(low)}, "
                         f"got {shown}")


def _check_pixels(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESOLUTION:
        raise ValueError(f"{name} must be a whole number of pixels in [1, {MAX_RESOLUTION}], got {value!r}")
