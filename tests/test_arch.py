"""Arch strings: canonical round trips, timm input, errors naming the token."""
import pytest

import nas
from nas.arch import Arch, Stage, parse_arch
from nas.baselines import baseline_names

V2S = ("stem_k3_s2_c24 fmb_r2_k3_s1_e1_c24 fmb_r4_k3_s2_e4_c48 fmb_r4_k3_s2_e4_c64 mb_r6_k3_s2_e4_c128_se0.25 "
       "mb_r9_k3_s1_e6_c160_se0.25 mb_r15_k3_s2_e6_c256_se0.25 head_c1280")
TIMM_V2S = ("stem_k3_s2_c24 cn_r2_k3_s1_e1_c24_skip er_r4_k3_s2_e4_c48 er_r4_k3_s2_e4_c64 ir_r6_k3_s2_e4_c128_se0.25 "
            "ir_r9_k3_s1_e6_c160_se0.25 ir_r15_k3_s2_e6_c256_se0.25 head_c1280")
TIMM_B0 = ("ds_r1_k3_s1_e1_c16_se0.25 ir_r2_k3_s2_e6_c24_se0.25 ir_r2_k5_s2_e6_c40_se0.25 ir_r3_k3_s2_e6_c80_se0.25 "
           "ir_r3_k5_s1_e6_c112_se0.25 ir_r4_k5_s2_e6_c192_se0.25 ir_r1_k3_s1_e6_c320_se0.25")


@pytest.mark.parametrize("name", baseline_names())
def test_baseline_strings_round_trip(name):
    arch = nas.baseline(name)
    assert parse_arch(str(arch)) == arch
    assert str(parse_arch(str(arch))) == str(arch)


def test_v2s_string_is_canonical():
    assert str(parse_arch(V2S)) == V2S
    assert str(nas.baseline("efficientnetv2_s")) == V2S


def test_timm_strings_are_accepted():
    assert str(parse_arch(TIMM_V2S)) == V2S
    assert parse_arch(TIMM_B0) == nas.baseline("efficientnet_b0")  # default stem and head


def test_timm_skip_flags():
    # timm's cn has a residual only with _skip; ds/ir/er have one unless _noskip
    assert not parse_arch("cn_r1_k3_s1_e1_c32").stages[0].skip
    assert parse_arch("cn_r1_k3_s1_e1_c32_skip").stages[0].skip
    assert str(parse_arch("ir_r1_k3_s1_e6_c32_noskip").stages[0]) == "mb_r1_k3_s1_e6_c32_noskip"


def test_specs_are_frozen_and_hashable():
    a, b = parse_arch(V2S), parse_arch(TIMM_V2S)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.stages[0].kernel = 5  # type: ignore[misc]
    assert a.replace_stage(0, kernel=5).stages[0].kernel == 5 and a.stages[0].kernel == 3


def test_expansion_is_normalised():
    assert Stage("mb", 1, 3, 1, 6.0, 16) == Stage("mb", 1, 3, 1, 6, 16)
    assert str(parse_arch("mb_r1_k3_s1_e1.5_c16")).split()[1] == "mb_r1_k3_s1_e1.5_c16"


@pytest.mark.parametrize("text, fragment", [
    ("stem_k3_s2_c32 xx_r1_k3_s1_e1_c16 head_c1280", "'xx'"),
    ("stem_k3_s2_c32 mb_r0_k3_s1_e1_c16 head_c1280", "repeats must be >= 1"),
    ("hello world", "'hello'"),
    ("mb_r1_k4_s1_e1_c16", "kernel must be odd"),
    ("mb_r1_k3_s3_e1_c16", "stride must be 1 or 2"),
    ("mb_r1_k3_s1_e1", "lacks _c"),
    ("mb_r1_k3_s1_e1_c16_q7", "'q7'"),
    ("mb_r1_k3_s1_e1_c16 stem_k3_s2_c32", "stem must be the first"),
    ("", "empty"),
])
def test_bad_strings_name_the_token(text, fragment):
    with pytest.raises(ValueError, match=fragment if fragment.startswith("'") is False else None) as err:
        parse_arch(text)
    assert fragment in str(err.value)


def test_arch_needs_a_stage():
    with pytest.raises(ValueError):
        Arch(stages=())
