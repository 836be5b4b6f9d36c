"""Reward formulas against hand-computed values, presets, validation and doctests."""
from __future__ import annotations

import doctest
import math

import pytest

import nas.reward
from nas.reward import (
    REWARD_KINDS,
    RewardSpec,
    efficientnetv2_reward,
    flops_reward,
    mnas_reward,
    reward_preset,
)

# 0.8 * 2**-0.07 * 0.5**-0.05, worked out by hand:
#   2**-0.07  = exp(-0.07 ln 2) = exp(-0.0485203) = 0.9526380
#   0.5**-0.05 = exp(0.05 ln 2) = exp(0.0346574) = 1.0352649
#   0.8 * 0.9526380 * 1.0352649 = 0.7889862
V2_HAND = 0.7889862


def test_efficientnetv2_hand_value() -> None:
    got = efficientnetv2_reward(0.8, 2 * 0.05, 0.5 * 4e6, step_time_ref=0.05, params_ref=4e6)
    assert got == pytest.approx(V2_HAND, abs=1e-7)
    assert got == pytest.approx(0.8 * 2 ** -0.07 * 0.5 ** -0.05, rel=1e-12)


def test_efficientnetv2_custom_exponents() -> None:
    # 0.5 * 4**-0.1 * 2**-0.2 = 0.5 * 2**-0.4 = 0.3789291
    got = efficientnetv2_reward(0.5, 4.0, 2.0, step_time_ref=1.0, params_ref=1.0,
                                w=-0.1, v=-0.2)
    assert got == pytest.approx(0.3789291, abs=1e-7)


@pytest.mark.parametrize("accuracy", [0.0, 0.3, 0.8, 1.0])
def test_reference_scores_its_accuracy(accuracy: float) -> None:
    assert efficientnetv2_reward(accuracy, 0.123, 5_288_548, step_time_ref=0.123,
                                 params_ref=5_288_548) == accuracy
    spec = RewardSpec().with_reference(step_time=0.123, params=5_288_548)
    assert spec(accuracy=accuracy, step_time=0.123, params=5_288_548, macs=1) == accuracy


def test_slower_and_bigger_is_worse() -> None:
    spec = RewardSpec().with_reference(step_time=0.1, params=1_000_000)
    base = spec(accuracy=0.7, step_time=0.1, params=1_000_000, macs=1)
    assert spec(accuracy=0.7, step_time=0.2, params=1_000_000, macs=1) < base
    assert spec(accuracy=0.7, step_time=0.1, params=2_000_000, macs=1) < base
    assert spec(accuracy=0.7, step_time=0.05, params=500_000, macs=1) > base


def test_mnas_soft_two_sided() -> None:
    # below target: 0.75 * 0.5**-0.07 = 0.75 * 1.0497166 = 0.7872875
    assert mnas_reward(0.75, 0.04, target=0.08) == pytest.approx(0.7872875, abs=1e-7)
    # above target: 0.75 * 2**-0.07 = 0.75 * 0.9526380 = 0.7144785
    assert mnas_reward(0.75, 0.16, target=0.08) == pytest.approx(0.7144785, abs=1e-7)
    assert mnas_reward(0.75, 0.08, target=0.08) == 0.75


def test_mnas_uses_alpha_below_and_beta_above() -> None:
    assert mnas_reward(0.6, 0.5, target=1.0, alpha=-1.0, beta=0.0) == pytest.approx(1.2)
    assert mnas_reward(0.6, 2.0, target=1.0, alpha=-1.0, beta=0.0) == 0.6


def test_mnas_hard_constraint() -> None:
    # alpha = 0: exactly ACC at or below the target; beta = -1: ACC * T / LAT above.
    assert mnas_reward(0.75, 0.01, target=0.08, alpha=0.0, beta=-1.0) == 0.75
    assert mnas_reward(0.75, 0.08, target=0.08, alpha=0.0, beta=-1.0) == 0.75
    assert mnas_reward(0.75, 0.1, target=0.08, alpha=0.0, beta=-1.0) == pytest.approx(
        0.75 * 0.08 / 0.1, rel=1e-12)
    spec = reward_preset("mnas_hard", target=0.08)
    assert spec(accuracy=0.75, step_time=0.05, params=10, macs=10) == 0.75
    assert spec(accuracy=0.75, step_time=0.32, params=10, macs=10) == pytest.approx(0.1875)


def test_flops_form_target_400m() -> None:
    assert flops_reward(0.77, 400e6) == 0.77
    # 0.77 * 2**-0.07 = 0.77 * 0.9526380 = 0.7335313
    assert flops_reward(0.77, 800e6) == pytest.approx(0.7335313, abs=1e-7)
    # EfficientNet-B0's 386M MACs sits a little under the target: a small bonus.
    assert flops_reward(0.77, 386e6) > 0.77
    spec = reward_preset("efficientnet")
    assert spec.target == 400e6
    assert spec(accuracy=0.77, step_time=1.0, params=1, macs=800_000_000) == pytest.approx(
        0.7335313, abs=1e-7)


def test_presets() -> None:
    assert reward_preset("efficientnetv2") == RewardSpec()
    assert RewardSpec().w == -0.07 and RewardSpec().v == -0.05
    soft = reward_preset("mnas_soft")
    assert (soft.kind, soft.alpha, soft.beta) == ("mnas_soft", -0.07, -0.07)
    hard = reward_preset("mnas_hard")
    assert (hard.kind, hard.alpha, hard.beta) == ("mnas_hard", 0.0, -1.0)
    assert reward_preset("efficientnet", target=300e6).target == 300e6
    for name in REWARD_KINDS:
        assert reward_preset(name).kind == name


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(ValueError, match="'nope'.*efficientnetv2.*mnas_hard.*multi_objective"):
        reward_preset("nope")
    with pytest.raises(ValueError, match="colour"):
        reward_preset("mnas_soft", colour=1)


def test_multi_objective() -> None:
    spec = reward_preset("multi_objective")
    assert spec.multi_objective
    assert spec.objectives() == (("accuracy", "maximize"), ("step_time", "minimize"),
                                 ("params", "minimize"))
    assert spec(accuracy=0.42, step_time=1.0, params=5, macs=5) == 0.42
    for name in ("efficientnetv2", "efficientnet", "mnas_soft", "mnas_hard"):
        assert not reward_preset(name).multi_objective
        assert reward_preset(name).objectives() == (("reward", "maximize"),)


def test_efficientnetv2_without_reference_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="with_reference"):
        RewardSpec()(accuracy=0.5, step_time=0.1, params=10, macs=10)


def test_mnas_needs_target() -> None:
    with pytest.raises(ValueError, match="target"):
        reward_preset("mnas_soft")(accuracy=0.5, step_time=0.1, params=10, macs=10)


@pytest.mark.parametrize("accuracy", [-0.01, 1.01, 75.0, math.nan, "0.5", None, True])
def test_bad_accuracy(accuracy: object) -> None:
    with pytest.raises(ValueError, match="accuracy"):
        efficientnetv2_reward(accuracy, 1.0, 1.0, step_time_ref=1.0,  # type: ignore[arg-type]
                              params_ref=1.0)
    with pytest.raises(ValueError, match="accuracy"):
        mnas_reward(accuracy, 1.0, target=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accuracy"):
        flops_reward(accuracy, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,kwargs", [
    ("step_time", dict(step_time=0.0)),
    ("step_time", dict(step_time=-1.0)),
    ("params", dict(params=0)),
    ("step_time_ref", dict(step_time_ref=math.inf)),
    ("params_ref", dict(params_ref=-5.0)),
])
def test_bad_costs_name_the_field(field: str, kwargs: dict[str, float]) -> None:
    args = dict(step_time=1.0, params=1.0, step_time_ref=1.0, params_ref=1.0) | kwargs
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        efficientnetv2_reward(0.5, args["step_time"], args["params"],
                              step_time_ref=args["step_time_ref"], params_ref=args["params_ref"])


def test_bad_mnas_and_flops_inputs() -> None:
    with pytest.raises(ValueError, match="latency"):
        mnas_reward(0.5, 0.0, target=1.0)
    with pytest.raises(ValueError, match="target"):
        mnas_reward(0.5, 1.0, target=-1.0)
    with pytest.raises(ValueError, match="macs"):
        flops_reward(0.5, 0)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="'efficientnetv3'"):
        RewardSpec(kind="efficientnetv3")
    with pytest.raises(ValueError, match="target"):
        RewardSpec(kind="mnas_soft", target=0.0)
    with pytest.raises(ValueError, match="w must be"):
        RewardSpec(w=math.nan)
    with pytest.raises(ValueError, match="step_time"):
        RewardSpec().with_reference(step_time=0.0, params=10)
    with pytest.raises(ValueError, match="params"):
        RewardSpec().with_reference(step_time=1.0, params=0)


def test_spec_round_trip_and_hashable() -> None:
    spec = reward_preset("mnas_hard", target=0.02).with_reference(step_time=0.1, params=7)
    assert RewardSpec.from_dict(spec.to_dict()) == spec
    assert hash(spec) == hash(RewardSpec.from_dict(spec.to_dict()))
    assert spec.params_ref == 7.0
    with pytest.raises(ValueError, match="bogus"):
        RewardSpec.from_dict({"kind": "efficientnetv2", "bogus": 1})


def test_with_reference_returns_a_copy() -> None:
    spec = RewardSpec()
    ref = spec.with_reference(step_time=0.2, params=100)
    assert spec.step_time_ref is None and ref.step_time_ref == 0.2 and ref.params_ref == 100


def test_doctests() -> None:
    result = doctest.testmod(nas.reward, raise_on_error=False)
    assert result.attempted >= 8
    assert result.failed == 0
