"""The builder reproduces the reference networks exactly; cost counts without a real forward."""
import time

import pytest
import torch

import nas
from nas.baselines import baseline_info, baseline_names
from nas.blocks import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth
from nas.cost import model_cost

# Parameters at 1000 classes (timm / torchvision) and GMACs at the eval resolution.
REFERENCE = {
    "efficientnet_b0": (5_288_548, 224, 0.3858), "efficientnet_b1": (7_794_184, 240, 0.6868),
    "efficientnet_b2": (9_109_994, 260, 0.9936), "efficientnet_b3": (12_233_232, 300, 1.8271),
    "efficientnet_b4": (19_341_616, 380, 4.3938), "efficientnet_b5": (30_389_784, 456, None),
    "efficientnet_b6": (43_040_704, 528, None), "efficientnet_b7": (66_347_960, 600, None),
    "efficientnetv2_b0": (7_139_704, 224, 0.7181), "efficientnetv2_b1": (8_141_052, 240, 1.1968),
    "efficientnetv2_b2": (10_096_086, 260, 1.6975), "efficientnetv2_b3": (14_358_406, 300, 3.0115),
    "efficientnetv2_s": (21_458_488, 384, 8.3656), "efficientnetv2_m": (54_139_356, 480, None),
    "efficientnetv2_l": (118_515_272, 480, None), "efficientnetv2_xl": (208_119_808, 512, None),
}


def test_every_baseline_has_a_reference():
    assert set(REFERENCE) == set(baseline_names())


@pytest.mark.parametrize("name", REFERENCE)
def test_baseline_params_and_macs(name):
    params, resolution, gmacs = REFERENCE[name]
    info = baseline_info(name)
    cost = model_cost(info.arch, info.eval_resolution)
    assert info.eval_resolution == resolution
    assert cost.params == params
    assert sum(cost.stage_params) < cost.params
    if gmacs:
        assert f"{cost.macs / 1e9:.4f}" == f"{gmacs:.4f}"  # the published figures, to 4 digits


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnetv2_b0"])
def test_built_module_matches_meta_count(name):
    model = nas.build_model(nas.baseline(name))
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name][0]


def test_compound_scaling_through_build_model():
    # B2 is B0 with width 1.1 and depth 1.2 (EfficientNet rounding, the 10 % rule)
    model = nas.build_model(nas.baseline("efficientnet_b0"), width_mult=1.1, depth_mult=1.2)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE["efficientnet_b2"][0]


def test_block_structure_of_v2s():
    model = nas.build_model(nas.baseline("efficientnetv2_s"), num_classes=10)
    first = model.stages[0][0]
    assert isinstance(first, FusedMBConv) and first.has_skip  # 24 -> 24, stride 1
    assert len(first.body) == 2 and isinstance(first.body[1], torch.nn.Identity)  # one conv, no SE, no project
    fused = model.stages[1][0]
    assert isinstance(fused, FusedMBConv) and not fused.has_skip and len(fused.body) == 3
    mb = model.stages[3][1]
    assert isinstance(mb, MBConv) and mb.has_skip
    se = mb.body[2]
    assert isinstance(se, SqueezeExcite)
    assert se.conv_reduce.out_channels == 32  # from the block input: int(128 * 0.25)
    assert model.stages[0][0].body[0][1].eps == 1e-3


def test_mbconv_without_expansion_has_no_expand_conv():
    model = nas.build_model("mb_r1_k3_s1_e1_c16_se0.25", num_classes=10)
    block = model.stages[0][0]
    assert isinstance(block.body[0], torch.nn.Identity)
    assert block.body[2].conv_reduce.out_channels == 8  # int(32 * 0.25)


def test_drop_path_grows_with_block_index():
    from nas.builder import block_configs

    cfgs = [c for _, stage in block_configs(nas.baseline("efficientnet_b0"), drop_path=0.2) for c in stage]
    assert [c.drop_path for c in cfgs] == pytest.approx([0.2 * i / 16 for i in range(16)])
    model = nas.build_model(nas.baseline("efficientnet_b0"), drop_path=0.2)
    blocks = [b for stage in model.stages for b in stage]
    for cfg, block in zip(cfgs, blocks):
        expect = cfg.drop_path if cfg.has_skip and cfg.drop_path else None
        got = block.drop_path.p if isinstance(block.drop_path, StochasticDepth) else None
        assert got == expect


def test_forward_backward_small():
    torch.manual_seed(0)
    model = nas.build_model(nas.baseline("efficientnetv2_b0"), num_classes=7, drop_path=0.1)
    y = model(torch.randn(2, 3, 64, 64))
    y.sum().backward()
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    assert all(p.grad is not None for p in model.parameters())


def test_macs_are_fast_for_a_large_network():
    arch = nas.baseline("efficientnetv2_l")
    model_cost(nas.baseline("efficientnet_b0"), 224)  # warm torch's meta kernels
    start = time.perf_counter()
    model_cost.__wrapped__(arch, 480)
    assert time.perf_counter() - start < 1.0


def test_build_model_rejects_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        nas.build_model(nas.baseline("efficientnet_b0"), num_classes=0)
    with pytest.raises(TypeError):
        nas.build_model(42)  # type: ignore[arg-type]
