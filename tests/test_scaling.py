"""Compound scaling: B0 -> B1..B7 exactly, phi arithmetic, rounding rules, round trips, bad input."""
import math

import pytest

import nas
from nas.arch import parse_arch
from nas.baselines import baseline_info
from nas.cost import model_cost
from nas.scaling import (
    ScaledArch,
    arch_family,
    make_divisible,
    scale_arch,
    scale_depth,
    scale_resolution,
    scale_width_depth,
)
from nas.spaces import load_space

# DESIGN.md: width / depth / resolution of B1..B7 relative to B0.
B_SERIES = {1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260), 3: (1.2, 1.4, 300), 4: (1.4, 1.8, 380),
            5: (1.6, 2.2, 456), 6: (1.8, 2.6, 528), 7: (2.0, 3.1, 600)}
PARAMS = {1: 7_794_184, 2: 9_109_994, 3: 12_233_232, 4: 19_341_616, 5: 30_389_784, 6: 43_040_704, 7: 66_347_960}


@pytest.mark.parametrize("n", B_SERIES)
def test_b0_scales_to_b1_to_b7_exactly(n):
    width, depth, resolution = B_SERIES[n]
    scaled = scale_arch(nas.baseline("efficientnet_b0"), width=width, depth=depth, resolution=resolution)
    assert scaled == ScaledArch(arch=nas.baseline(f"efficientnet_b{n}"), resolution=resolution, width=width,
                                depth=depth, family="efficientnet")
    assert str(scaled.arch) == str(nas.baseline(f"efficientnet_b{n}"))
    assert model_cost(scaled.arch, resolution).params == PARAMS[n]


def test_b7_string():
    b7 = scale_arch(nas.baseline("efficientnet_b0"), width=2.0, depth=3.1, resolution=600).arch
    assert str(b7) == ("stem_k3_s2_c64 mb_r4_k3_s1_e1_c32_se0.25 mb_r7_k3_s2_e6_c48_se0.25 mb_r7_k5_s2_e6_c80_se0.25 "
                       "mb_r10_k3_s2_e6_c160_se0.25 mb_r10_k5_s1_e6_c224_se0.25 mb_r13_k5_s2_e6_c384_se0.25 "
                       "mb_r4_k3_s1_e6_c640_se0.25 head_c2560")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_v2_b0_scales_to_v2_b1_to_b3_with_the_v2_rounding(n):
    info = baseline_info(f"efficientnetv2_b{n}")
    scaled = scale_arch(nas.baseline("efficientnetv2_b0"), width=info.width, depth=info.depth,
                        resolution=info.eval_resolution)
    assert scaled.family == "efficientnetv2" and scaled.arch == info.arch


def test_family_decides_the_width_rounding():
    # 32 x 1.12 = 35.84: the nearest multiple of 8 is 32 (V2); V1's 10 % rule bumps it to 40, as 32 < 0.9 x 35.84.
    arch = parse_arch("stem_k3_s2_c32 mb_r1_k3_s1_e1_c32 head_c32")
    assert arch_family(arch) == "efficientnet"
    assert str(scale_arch(arch, width=1.12).arch) == "stem_k3_s2_c40 mb_r1_k3_s1_e1_c40 head_c40"
    v2_rounding = scale_arch(arch, width=1.12, family="efficientnetv2").arch
    assert str(v2_rounding) == "stem_k3_s2_c32 mb_r1_k3_s1_e1_c32 head_c32"
    v2 = parse_arch("fmb_r1_k3_s1_e1_c32 mb_r1_k3_s1_e1_c32")
    assert arch_family(v2) == "efficientnetv2" and scale_arch(v2, width=1.12).arch.stages[0].channels == 32
    assert (make_divisible(35.84), make_divisible(35.84, round_limit=0.0)) == (40, 32)


@pytest.mark.parametrize("phi, width, depth, resolution", [
    (0, 1.0, 1.0, 224),
    (1, 1.1, 1.2, 256),  # 224 x 1.15 = 257.6
    (2, 1.21, 1.44, 296),  # 296.24
    (3, 1.331, 1.728, 344),  # 340.68 -> nearest multiple of 8
    (0.5, 1.1 ** 0.5, 1.2 ** 0.5, 240),  # 240.21
])
def test_phi_arithmetic(phi, width, depth, resolution):
    b0 = nas.baseline("efficientnet_b0")
    scaled = scale_arch(b0, phi=phi)
    assert (scaled.width, scaled.depth, scaled.resolution) == (pytest.approx(width), pytest.approx(depth), resolution)
    assert scaled.arch == scale_width_depth(b0, width=scaled.width, depth=scaled.depth)
    repeats = [s.repeats for s in b0.stages]
    assert [s.repeats for s in scaled.arch.stages] == [math.ceil(r * depth - 1e-9) for r in repeats]


def test_phi_with_own_coefficients_and_cap():
    b0 = nas.baseline("efficientnet_b0")
    scaled = scale_arch(b0, phi=2, alpha=1.0, beta=1.0, gamma=2.0, base_resolution=100, max_resolution=384)
    assert scaled.arch == b0 and scaled.resolution == 384  # 400 capped
    assert scale_arch(b0, phi=2, alpha=1.0, beta=1.0, gamma=2.0, base_resolution=100).resolution == 400
    assert scale_arch(b0, width=1.0, resolution=600, max_resolution=480).resolution == 480


def test_rounding_helpers():
    assert [scale_depth(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert scale_depth(25, 2.2) == 55  # 25 x 2.2 = 55.00000000000001 in floating point
    assert scale_depth(5, 1.0) == 5
    assert [scale_resolution(224, 1.15 ** p) for p in range(8)] == [224, 256, 296, 344, 392, 448, 520, 592]
    assert scale_resolution(260, 1.0) == 260  # multiplier 1 keeps even a resolution that is no multiple of 8
    assert scale_resolution(3, 1.5) == 8  # at least one divisor


def test_width_one_keeps_odd_channels():
    arch = parse_arch("stem_k3_s2_c13 mb_r2_k3_s1_e1_c17 head_c99")
    assert str(scale_arch(arch, depth=2.0).arch) == "stem_k3_s2_c13 mb_r4_k3_s1_e1_c17 head_c99"


def _sample_archs():
    archs = [nas.baseline(n) for n in ("efficientnet_b0", "efficientnetv2_s", "efficientnetv2_b0")]
    archs += [load_space(name).sample(seed) for name in ("tiny", "efficientnet", "efficientnetv2") for seed in (0, 1)]
    archs.append(parse_arch("stem_k5_s1_c20 ir_r3_k7_s2_e2.5_c44_noskip cn_r1_k3_s1_c36_skip head_c512"))
    return archs


@pytest.mark.parametrize("arch", _sample_archs(), ids=lambda a: str(a)[:40])
@pytest.mark.parametrize("how", [dict(phi=1), dict(phi=2.5), dict(width=0.75, depth=0.5, resolution=128),
                                 dict(width=1.3, depth=1.7)])
def test_scaled_archs_round_trip(arch, how):
    scaled = scale_arch(arch, **how).arch
    assert parse_arch(str(scaled)) == scaled and str(parse_arch(str(scaled))) == str(scaled)
    assert [(s.block, s.kernel, s.stride, s.expansion, s.se, s.skip) for s in scaled.stages] == \
           [(s.block, s.kernel, s.stride, s.expansion, s.se, s.skip) for s in arch.stages]


@pytest.mark.parametrize("kwargs, message", [
    (dict(phi=-1), "phi must be a finite number >= 0, got -1"),
    (dict(phi=float("nan")), "phi must be a finite number >= 0, got nan"),
    (dict(width=0), "width must be a finite number > 0, got 0"),
    (dict(depth=-2.0), "depth must be a finite number > 0, got -2"),
    (dict(width=float("inf")), "width must be a finite number > 0, got inf"),
    (dict(resolution=0), "resolution must be a whole number of pixels in [1, 8192], got 0"),
    (dict(phi=1, max_resolution=0), "max_resolution must be a whole number of pixels in [1, 8192], got 0"),
    (dict(phi=1, alpha=0.9), "alpha must be a finite number >= 1, got 0.9"),
    (dict(phi=1, width=1.1), "give either phi or width/depth/resolution, not both (got phi and width)"),
    ({}, "give phi, or width/depth/resolution"),
    (dict(phi=1, family="efficientnetv3"), "family must be one of efficientnet, efficientnetv2, got 'efficientnetv3'"),
    (dict(phi=1e6), "phi 1e+06 is too large"),
    (dict(phi=50), "scaling by phi 50 leaves the architecture bounds: 'mb_r9101_k3_s1_e1_c1880_se0.25': "
                   "repeats must be in [1, 1000], got 9101"),
    (dict(phi=30, alpha=1.0, beta=1.0), "scaling by phi 30 gives resolution 14,832, above 8192; lower it or cap it "
                                        "with max_resolution"),
])
def test_bad_input_is_one_line_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError) as err:
        scale_arch(nas.baseline("efficientnet_b0"), **kwargs)
    assert str(err.value) == message


def test_exported():
    assert nas.scale_arch is scale_arch


def test_doctests():
    import doctest

    import nas.scaling

    assert doctest.testmod(nas.scaling).failed == 0
