"""Rewards: one number per candidate from accuracy and its measured costs.

Pure functions, one per paper, plus `RewardSpec`, the serializable choice a search is
configured with:

- EfficientNetV2 (§3.3): ``A · (S/S0)^w · (P/P0)^v``, w = −0.07, v = −0.05, with S the
  measured training-step time and P the parameter count, both normalized by a
  reference measured on the same device (design, decision 4): the reference scores
  exactly its accuracy.
- MnasNet: ``ACC · (LAT/T)^w``, w = α when LAT ≤ T else β; soft α = β = −0.07, hard
  α = 0, β = −1.
- EfficientNet-B0: ``ACC · (FLOPs/T)^−0.07`` with T = 400M (the papers' "FLOPs" are
  multiply-adds, so MACs go in).

Accuracy is always a fraction in [0, 1].
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REWARD_KINDS",
    "RewardSpec",
    "efficientnetv2_reward",
    "flops_reward",
    "mnas_reward",
    "reward_preset",
]

#: The reward forms `RewardSpec.kind` accepts (and the preset names).
REWARD_KINDS = ("efficientnetv2", "efficientnet", "mnas_soft", "mnas_hard", "multi_objective")

_DEFAULT_MACS_TARGET = 400e6


def _check_accuracy(accuracy: float) -> float:
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise ValueError(f"accuracy must be a number in [0, 1], got {accuracy!r}")
    if not 0.0 <= accuracy <= 1.0:  # also rejects NaN
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    return float(accuracy)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_exponent(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def efficientnetv2_reward(accuracy: float, step_time: float, params: float, *,
                          step_time_ref: float, params_ref: float, w: float = -0.07,
                          v: float = -0.05) -> float:
    """The EfficientNetV2 search reward ``A · (S/S0)^w · (P/P0)^v``.

    Args:
        accuracy: A, a fraction in [0, 1].
        step_time: S, seconds of one training step on the search device.
        params: P, the parameter count.
        step_time_ref: S0, the reference's step time on the same device.
        params_ref: P0, the reference's parameter count.
        w: Exponent of the step-time ratio (negative: slower is worse).
        v: Exponent of the parameter ratio.

    Returns:
        The reward; equal to ``accuracy`` for the reference itself.

    Raises:
        ValueError: When accuracy is outside [0, 1] or a time/count is not positive.

    Example:
        >>> efficientnetv2_reward(0.8, 0.1, 5e6, step_time_ref=0.1, params_ref=5e6)
        0.8
        >>> round(efficientnetv2_reward(0.8, 0.2, 2.5e6, step_time_ref=0.1,
        ...                             params_ref=5e6), 6)
        0.788986
    """
    accuracy = _check_accuracy(accuracy)
    ratio_s = _check_positive("step_time", step_time) / _check_positive("step_time_ref",
                                                                         step_time_ref)
    ratio_p = _check_positive("params", params) / _check_positive("params_ref", params_ref)
    return accuracy * ratio_s ** _check_exponent("w", w) * ratio_p ** _check_exponent("v", v)


def mnas_reward(accuracy: float, latency: float, *, target: float, alpha: float = -0.07,
                beta: float = -0.07) -> float:
    """The MnasNet reward ``ACC · (LAT/T)^w``, w = alpha if LAT ≤ T else beta.

    The soft form (alpha = beta = −0.07) trades accuracy for latency on both sides
    of the target; the hard constraint (alpha = 0, beta = −1) scores exactly ACC at
    or below the target and ``ACC · T/LAT`` above it.

    Args:
        accuracy: ACC, a fraction in [0, 1].
        latency: LAT, seconds (here: the measured step time).
        target: T, the target latency in the same unit.
        alpha: Exponent at or below the target.
        beta: Exponent above the target.

    Returns:
        The reward.

    Raises:
        ValueError: When accuracy is outside [0, 1] or latency/target is not positive.

    Example:
        >>> round(mnas_reward(0.75, 0.08, target=0.08), 6)
        0.75
        >>> mnas_reward(0.75, 0.05, target=0.08, alpha=0.0, beta=-1.0)
        0.75
        >>> round(mnas_reward(0.75, 0.16, target=0.08, alpha=0.0, beta=-1.0), 6)
        0.375
    """
    accuracy = _check_accuracy(accuracy)
    latency = _check_positive("latency", latency)
    target = _check_positive("target", target)
    w = _check_exponent("alpha", alpha) if latency <= target else _check_exponent("beta", beta)
    return accuracy * (latency / target) ** w


def flops_reward(accuracy: float, macs: float, *, target: float = _DEFAULT_MACS_TARGET,
                 w: float = -0.07) -> float:
    """The EfficientNet-B0 search reward ``ACC · (FLOPs/T)^w``, T = 400M.

    Args:
        accuracy: ACC, a fraction in [0, 1].
        macs: Multiply-adds of one forward pass (the papers call them FLOPs).
        target: T, the multiply-add target.
        w: Exponent of the ratio.

    Returns:
        The reward.

    Raises:
        ValueError: When accuracy is outside [0, 1] or macs/target is not positive.

    Example:
        >>> flops_reward(0.77, 400e6)
        0.77
        >>> round(flops_reward(0.77, 800e6), 6)
        0.733531
    """
    accuracy = _check_accuracy(accuracy)
    ratio = _check_positive("macs", macs) / _check_positive("target", target)
    return accuracy * ratio ** _check_exponent("w", w)


@dataclass(frozen=True)
class RewardSpec:
    """Which reward a search maximizes, with its constants.

    Attributes:
        kind: "efficientnetv2" (A·S^w·P^v), "efficientnet" (MACs form), "mnas_soft",
            "mnas_hard" or "multi_objective" (no scalar: accuracy ↑, step time ↓,
            params ↓ as three objectives).
        w: Exponent of the step-time ratio (efficientnetv2) or the MACs ratio
            (efficientnet); the default of alpha and beta for mnas_soft.
        v: Exponent of the parameter ratio (efficientnetv2).
        alpha: MnasNet exponent at or below the target; None = the kind's default
            (w for mnas_soft, 0 for mnas_hard).
        beta: MnasNet exponent above the target; None = the kind's default
            (w for mnas_soft, −1 for mnas_hard).
        target: Latency target in seconds (mnas, compared with the step time) or
            multiply-add target (efficientnet; None = 400e6).
        step_time_ref: S0, seconds; set by `with_reference`.
        params_ref: P0; set by `with_reference`.

    Example:
        >>> spec = RewardSpec().with_reference(step_time=0.1, params=5_000_000)
        >>> spec(accuracy=0.8, step_time=0.1, params=5_000_000, macs=400_000_000)
        0.8
    """

    kind: str = "efficientnetv2"
    w: float = -0.07
    v: float = -0.05
    alpha: float | None = None
    beta: float | None = None
    target: float | None = None
    step_time_ref: float | None = None
    params_ref: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward kind must be one of {list(REWARD_KINDS)}, "
                             f"got {self.kind!r}")
        for name in ("w", "v"):
            object.__setattr__(self, name, _check_exponent(name, getattr(self, name)))
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_exponent(name, value))
        for name in ("target", "step_time_ref", "params_ref"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_positive(name, value))

    @property
    def multi_objective(self) -> bool:
        """True when the search optimizes three objectives instead of one reward."""
        return self.kind == "multi_objective"

    def objectives(self) -> tuple[tuple[str, str], ...]:
        """The (name, direction) pairs the study optimizes.

        Example:
            >>> RewardSpec().objectives()
            (('reward', 'maximize'),)
        """
        if self.multi_objective:
            return (("accuracy", "maximize"), ("step_time", "minimize"),
                    ("params", "minimize"))
        return (("reward", "maximize"),)

    def with_reference(self, *, step_time: float, params: int) -> RewardSpec:
        """A copy normalized by a reference's S0 and P0 (measured on this device).

        Raises:
            ValueError: When step_time or params is not positive.
        """
        return dataclasses.replace(self,
                                   step_time_ref=_check_positive("step_time", step_time),
                                   params_ref=_check_positive("params", params))

    def __call__(self, *, accuracy: float, step_time: float, params: int,
                 macs: int) -> float:
        """Scores one candidate.

        Args:
            accuracy: Validation accuracy, a fraction in [0, 1].
            step_time: Measured training-step time, seconds.
            params: Parameter count.
            macs: Multiply-adds of one forward pass.

        Returns:
            The reward; for "multi_objective", the accuracy (the search ranks on the
            three `objectives` instead).

        Raises:
            ValueError: For bad inputs, or a spec missing what its kind needs
                (efficientnetv2 without a reference, mnas without a target).
        """
        accuracy = _check_accuracy(accuracy)
        _check_positive("step_time", step_time)
        _check_positive("params", params)
        if self.kind == "efficientnetv2":
            if self.step_time_ref is None or self.params_ref is None:
                raise ValueError("efficientnetv2 reward has no reference (step_time_ref, "
                                 "params_ref); call RewardSpec.with_reference(step_time=S0, "
                                 "params=P0) first")
            return efficientnetv2_reward(accuracy, step_time, params,
                                         step_time_ref=self.step_time_ref,
                                         params_ref=self.params_ref, w=self.w, v=self.v)
        if self.kind == "efficientnet":
            target = _DEFAULT_MACS_TARGET if self.target is None else self.target
            return flops_reward(accuracy, macs, target=target, w=self.w)
        if self.kind in ("mnas_soft", "mnas_hard"):
            if self.target is None:
                raise ValueError(f"{self.kind} reward needs target (the latency target "
                                 f"in seconds), got None")
            alpha, beta = self._mnas_exponents()
            return mnas_reward(accuracy, step_time, target=self.target, alpha=alpha,
                               beta=beta)
        return accuracy  # multi_objective

    def _mnas_exponents(self) -> tuple[float, float]:
        default_alpha, default_beta = (self.w, self.w) if self.kind == "mnas_soft" else (0.0, -1.0)
        return (default_alpha if self.alpha is None else self.alpha,
                default_beta if self.beta is None else self.beta)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardSpec:
        """Builds a spec from a dict such as an experiment file's ``reward:`` block.

        Raises:
            ValueError: For unknown keys or bad values.
        """
        if not isinstance(data, dict):
            raise ValueError(f"reward spec must be a mapping, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown reward keys {unknown}; expected some of {names}")
        return cls(**data)


def reward_preset(name: str, **overrides: Any) -> RewardSpec:
    """A paper's reward by name, optionally with fields changed.

    Args:
        name: "efficientnetv2", "efficientnet", "mnas_soft", "mnas_hard" or
            "multi_objective".
        **overrides: `RewardSpec` fields to set (e.g. ``target=0.05``).

    Returns:
        The spec.

    Raises:
        ValueError: For an unknown name or override key.

    Example:
        >>> spec = reward_preset("mnas_hard", target=0.05)
        >>> spec.kind, spec.alpha, spec.beta, spec.target
        ('mnas_hard', 0.0, -1.0, 0.05)
    """
    presets: dict[str, dict[str, Any]] = {
        "efficientnetv2": {"kind": "efficientnetv2", "w": -0.07, "v": -0.05},
        "efficientnet": {"kind": "efficientnet", "w": -0.07, "target": _DEFAULT_MACS_TARGET},
        "mnas_soft": {"kind": "mnas_soft", "alpha": -0.07, "beta": -0.07},
        "mnas_hard": {"kind": "mnas_hard", "alpha": 0.0, "beta": -1.0},
        "multi_objective": {"kind": "multi_objective"},
    }
    if name not in presets:
        raise ValueError(f"unknown reward preset {name!r}; choose one of {list(presets)}")
    fields = presets[name] | overrides
    return RewardSpec.from_dict(fields)
