"""The EfficientNet and EfficientNetV2 families, built from their base archs by compound scaling.

Parameter counts at 1000 classes equal the reference implementations' exactly (tests and
the table in docs/design.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nas._echo import echo
from nas.arch import Arch, parse_arch, read_arch_file
from nas.scaling import FAMILIES, scale_width_depth

__all__ = ["Baseline", "baseline", "baseline_info", "baseline_names", "resolve_arch"]

_B0 = ("stem_k3_s2_c32 mb_r1_k3_s1_e1_c16_se0.25 mb_r2_k3_s2_e6_c24_se0.25 mb_r2_k5_s2_e6_c40_se0.25 "
       "mb_r3_k3_s2_e6_c80_se0.25 mb_r3_k5_s1_e6_c112_se0.25 mb_r4_k5_s2_e6_c192_se0.25 "
       "mb_r1_k3_s1_e6_c320_se0.25 head_c1280")
_V2_BASE = ("stem_k3_s2_c32 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 fmb_r2_k3_s2_e4_c48 "
            "mb_r3_k3_s2_e4_c96_se0.25 mb_r5_k3_s1_e6_c112_se0.25 mb_r8_k3_s2_e6_c192_se0.25 head_c1280")
# EfficientNetV2 S/M/L/XL, the official configs (Tan & Le 2021, Table 4 and effnetv2_configs.py).
_V2_S = ("stem_k3_s2_c24 fmb_r2_k3_s1_e1_c24 fmb_r4_k3_s2_e4_c48 fmb_r4_k3_s2_e4_c64 "
         "mb_r6_k3_s2_e4_c128_se0.25 mb_r9_k3_s1_e6_c160_se0.25 mb_r15_k3_s2_e6_c256_se0.25 head_c1280")
_V2_M = ("stem_k3_s2_c24 fmb_r3_k3_s1_e1_c24 fmb_r5_k3_s2_e4_c48 fmb_r5_k3_s2_e4_c80 "
         "mb_r7_k3_s2_e4_c160_se0.25 mb_r14_k3_s1_e6_c176_se0.25 mb_r18_k3_s2_e6_c304_se0.25 "
         "mb_r5_k3_s1_e6_c512_se0.25 head_c1280")
_V2_L = ("stem_k3_s2_c32 fmb_r4_k3_s1_e1_c32 fmb_r7_k3_s2_e4_c64 fmb_r7_k3_s2_e4_c96 "
         "mb_r10_k3_s2_e4_c192_se0.25 mb_r19_k3_s1_e6_c224_se0.25 mb_r25_k3_s2_e6_c384_se0.25 "
         "mb_r7_k3_s1_e6_c640_se0.25 head_c1280")
_V2_XL = ("stem_k3_s2_c32 fmb_r4_k3_s1_e1_c32 fmb_r8_k3_s2_e4_c64 fmb_r8_k3_s2_e4_c96 "
          "mb_r16_k3_s2_e4_c192_se0.25 mb_r24_k3_s1_e6_c256_se0.25 mb_r32_k3_s2_e6_c512_se0.25 "
          "mb_r8_k3_s1_e6_c640_se0.25 head_c1280")


@dataclass(frozen=True)
class Baseline:
    """A named reference network: its scaled arch and the resolutions it was trained/evaluated at."""

    name: str
    arch: Arch
    train_resolution: int
    eval_resolution: int
    family: str
    width: float = 1.0
    depth: float = 1.0
    dropout: float = 0.2


# name: (family, base arch, width, depth, train resolution, eval resolution, dropout)
_TABLE: dict[str, tuple[str, str, float, float, int, int, float]] = {
    "efficientnet_b0": ("efficientnet", _B0, 1.0, 1.0, 224, 224, 0.2),
    "efficientnet_b1": ("efficientnet", _B0, 1.0, 1.1, 240, 240, 0.2),
    "efficientnet_b2": ("efficientnet", _B0, 1.1, 1.2, 260, 260, 0.3),
    "efficientnet_b3": ("efficientnet", _B0, 1.2, 1.4, 300, 300, 0.3),
    "efficientnet_b4": ("efficientnet", _B0, 1.4, 1.8, 380, 380, 0.4),
    "efficientnet_b5": ("efficientnet", _B0, 1.6, 2.2, 456, 456, 0.4),
    "efficientnet_b6": ("efficientnet", _B0, 1.8, 2.6, 528, 528, 0.5),
    "efficientnet_b7": ("efficientnet", _B0, 2.0, 3.1, 600, 600, 0.5),
    "efficientnetv2_b0": ("efficientnetv2", _V2_BASE, 1.0, 1.0, 192, 224, 0.2),
    "efficientnetv2_b1": ("efficientnetv2", _V2_BASE, 1.0, 1.1, 192, 240, 0.2),
    "efficientnetv2_b2": ("efficientnetv2", _V2_BASE, 1.1, 1.2, 208, 260, 0.3),
    "efficientnetv2_b3": ("efficientnetv2", _V2_BASE, 1.2, 1.4, 240, 300, 0.3),
    "efficientnetv2_s": ("efficientnetv2", _V2_S, 1.0, 1.0, 300, 384, 0.2),
    "efficientnetv2_m": ("efficientnetv2", _V2_M, 1.0, 1.0, 384, 480, 0.3),
    "efficientnetv2_l": ("efficientnetv2", _V2_L, 1.0, 1.0, 384, 480, 0.4),
    "efficientnetv2_xl": ("efficientnetv2", _V2_XL, 1.0, 1.0, 384, 512, 0.4),
}


def baseline_names() -> tuple[str, ...]:
    """Every shipped baseline, smallest first within each family."""
    return tuple(_TABLE)


@cache
def baseline_info(name: str) -> Baseline:
    """The :class:`Baseline` called ``name``; ``ValueError`` listing the names otherwise."""
    if name not in _TABLE:
        raise ValueError(f"unknown baseline {echo(name)} (choose from {', '.join(_TABLE)})")
    family, base, width, depth, train_res, eval_res, dropout = _TABLE[name]
    arch = scale_width_depth(parse_arch(base), width=width, depth=depth, round_limit=FAMILIES[family])
    return Baseline(name, arch, train_res, eval_res, family, width, depth, dropout)


def baseline(name: str) -> Arch:
    """The architecture of a named baseline, e.g. ``baseline("efficientnetv2_s")``."""
    return baseline_info(name).arch


def resolve_arch(text: str) -> Arch:
    """ARCH as users give it: a baseline name, an arch string, or a file holding one.

    A single token names a file when one exists (read with
    :func:`~nas.arch.read_arch_file`), a baseline when it starts with ``efficientnet``
    (an unknown one lists the names), else it is an arch string.

    Raises:
        ValueError: one line naming the bad token, baseline or file.
    """
    if text in _TABLE:
        return baseline(text)
    if len(text.split()) == 1:
        if _exists(Path(text)):
            return read_arch_file(text)
        if text.startswith("efficientnet"):
            return baseline(text)  # raises: unknown baseline, listing the names
    return parse_arch(text)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system is an arch string, not a file
        return False
