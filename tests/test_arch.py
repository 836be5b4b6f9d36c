"""Arch strings: canonical round trips, timm input, bounds, errors naming the token."""
import pytest

import nas
from nas.arch import MAX_ARCH_CHARS, MAX_ARCH_FILE_BYTES, Arch, Stage, parse_arch, read_arch_file
from nas.baselines import baseline_names, resolve_arch

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
    ("stem_k3_s2_c32 mb_r0_k3_s1_e1_c16 head_c1280", "repeats must be in [1, 1000], got 0"),
    ("hello world", "'hello'"),
    ("mb_r1_k4_s1_e1_c16", "kernel must be odd"),
    ("mb_r1_k3_s3_e1_c16", "stride must be 1 or 2"),
    ("mb_r1_k3_s1_e1", "lacks _c"),
    ("mb_r1_k3_s1_e1_c16_q7", "'q7'"),
    ("mb_r1_k3_s1_e1_c16 stem_k3_s2_c32", "stem must be the first"),
    ("", "empty"),
])
def test_bad_strings_name_the_token(text, fragment):
    with pytest.raises(ValueError) as err:
        parse_arch(text)
    assert fragment in str(err.value)


def test_arch_needs_a_stage():
    with pytest.raises(ValueError):
        Arch(stages=())


@pytest.mark.parametrize("text, message", [
    ("mb_r100000_k3_s1_e1_c16", "'mb_r100000_k3_s1_e1_c16': repeats must be in [1, 1000], got 100000"),
    ("mb_r1_k33_s1_e1_c16", "'mb_r1_k33_s1_e1_c16': kernel must be <= 31, got 33"),
    ("mb_r1_k3_s1_e33_c16", "'mb_r1_k3_s1_e33_c16': expansion must be in (0, 32], got 33"),
    ("mb_r1_k3_s1_e1_c16385", "'mb_r1_k3_s1_e1_c16385': channels must be in [1, 16384], got 16385"),
    ("stem_k3_s2_c20000 mb_r1_k3_s1_e1_c16", "'stem_k3_s2_c20000': channels must be in [1, 16384], got 20000"),
    ("mb_r1_k3_s1_e1_c16 head_c20000", "head channels must be <= 16384, got 20000"),
    ("mb_r1000_k3_s1_e1_c16 mb_r1000_k3_s1_e1_c16 mb_r1_k3_s1_e1_c16",
     "2,001 blocks in all; an architecture has at most 2,000"),
    ("mb_r" + "9" * 13 + "_k3_s1_e1_c16", "_r has a number of 13 characters in token 'mb_r9999999999999_k3_s1_e1_c16'"),
])
def test_bounds(text, message):
    with pytest.raises(ValueError) as err:
        parse_arch(text)
    assert str(err.value) == message


def test_largest_allowed_values_parse():
    arch = parse_arch("stem_k31_s2_c16384 mb_r1000_k31_s1_e32_c16384_se0.5 mb_r1000_k3_s1_e1_c8 head_c16384")
    assert arch.depth == 2000 and str(parse_arch(str(arch))) == str(arch)


@pytest.mark.parametrize("text", ["mb_r1_k3_s1_e1_c16 " * 4000, "x" * 1_000_000, "mb_r" + "1" * 100_000])
def test_huge_strings_give_short_errors(text):
    with pytest.raises(ValueError) as err:
        parse_arch(text)
    assert len(str(err.value)) < 300


def test_too_long_string_is_refused_unread():
    with pytest.raises(ValueError) as err:
        parse_arch("q" * (MAX_ARCH_CHARS + 1))
    assert str(err.value) == (f"architecture string of 65,537 characters is too long (at most 65,536): "
                              f"'{'q' * 99}... (65,537 characters)")


def test_arch_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\n" + V2S + "\n")
    assert read_arch_file(path) == resolve_arch(str(path)) == parse_arch(V2S)


@pytest.mark.parametrize("content, message", [
    (b"\x80\x81" * 100, "not UTF-8 text"),
    (b"x" * (MAX_ARCH_FILE_BYTES + 1), "larger than 1 MB; an arch file holds one arch string"),
    (b"mb_r1_k3_s1_e1_c16 " * 50_000, "architecture string of 950,000 characters is too long (at most 65,536)"),
    (b"mb_r1_k4_s1_e1_c16", "'mb_r1_k4_s1_e1_c16': kernel must be odd and >= 1, got 4"),
])
def test_bad_arch_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "a.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        resolve_arch(str(path))
    assert str(err.value).startswith(f"{path}: {message}") and len(str(err.value)) < 300


def test_resolve_arch(tmp_path):
    assert resolve_arch("efficientnet_b0") == nas.baseline("efficientnet_b0")
    assert resolve_arch(TIMM_B0) == nas.baseline("efficientnet_b0")
    with pytest.raises(ValueError, match="is a directory, not an arch file"):
        resolve_arch(str(tmp_path))
    with pytest.raises(ValueError, match="unknown baseline 'efficientnet_b9'"):
        resolve_arch("efficientnet_b9")
    with pytest.raises(ValueError, match="unknown block type 'yyy"):
        resolve_arch("y" * 5000)  # too long for a file name: an arch string


@pytest.mark.parametrize("module", ["nas.arch", "nas._echo"])
def test_doctests(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module)).failed == 0
