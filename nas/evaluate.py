"""One candidate, for real: cost, measured step time on this device, proxy training, reward.

The same function serves ``nas evaluate``, the local search and the Ray trainable, so a
candidate is scored identically wherever it runs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nas.arch import Arch
from nas.constraints import Violation
from nas.cost import model_cost
from nas.data import Dataset
from nas.measure import StepTime, StepTimeCache, measure_step_time, shared_device
from nas.reward import RewardSpec
from nas.train import CandidateFailure, ProxyConfig, train

__all__ = ["Evaluation", "evaluate", "measure_arch", "resolve_reward"]


@dataclass
class Evaluation:
    """What one candidate scored. ``state`` is COMPLETE or FAIL (``reason`` says why)."""

    arch: str
    state: str
    params: int
    macs: int
    reason: str | None = None
    accuracy: float | None = None
    epoch_accuracies: list[float] = field(default_factory=list)
    step_time: float | None = None
    step_time_p10: float | None = None
    step_time_p90: float | None = None
    inference_latency: float | None = None
    peak_memory: int | None = None
    device: str | None = None
    exclusive: bool | None = None
    reward: float | None = None
    constraint_violation: float | None = None
    train_seconds: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_arch(arch: Arch, *, num_classes: int, proxy: ProxyConfig, device: str | torch.device | None,
                 cache: StepTimeCache | None, lock_dir: Path | None = None) -> StepTime:
    """S of ``arch`` at the proxy's batch, resolution, dtype and memory format on ``device``."""
    from nas.builder import build_model

    torch.manual_seed(proxy.seed)
    model = build_model(arch, num_classes=num_classes)
    return measure_step_time(model, batch=proxy.batch_size, resolution=proxy.resolution, num_classes=num_classes,
                             device=device, dtype=proxy.dtype, channels_last=proxy.channels_last,
                             cache=cache, cache_key=str(arch), lock_dir=lock_dir)


def resolve_reward(spec: RewardSpec, reference: Arch | None, *, num_classes: int, proxy: ProxyConfig,
                   device: str | torch.device | None, cache: StepTimeCache | None,
                   lock_dir: Path | None = None) -> RewardSpec:
    """Fill in S0/P0 from the reference measured on *this* device (design, decision 4)."""
    if spec.kind != "efficientnetv2" or spec.step_time_ref is not None and spec.params_ref is not None:
        return spec
    if reference is None:
        raise ValueError("the efficientnetv2 reward needs a reference arch or step_time_ref/params_ref")
    s0 = spec.step_time_ref or measure_arch(reference, num_classes=num_classes, proxy=proxy, device=device,
                                            cache=cache, lock_dir=lock_dir).step_time
    p0 = spec.params_ref or model_cost(reference, proxy.resolution, num_classes).params
    return spec.with_reference(step_time=s0, params=p0)


def evaluate(arch: Arch, data: Dataset, proxy: ProxyConfig, reward: RewardSpec, *,
             reference: Arch | None = None, device: str | torch.device | None = None,
             cache: StepTimeCache | None = None,
             on_epoch: Callable[[int, float], None] | None = None,
             on_measured: Callable[[StepTime], None] | None = None,
             keep_weights: Path | None = None,
             check: Callable[[dict[str, float | None]], Violation | None] | None = None,
             lock_dir: Path | None = None, step: StepTime | None = None) -> Evaluation:
    """Score one candidate. A candidate's own failure (diverged, oom, invalid) is a FAIL result.

    Exceptions raised by ``on_epoch`` (e.g. ``optuna.TrialPruned``) propagate, as do
    outside interruptions (``KeyboardInterrupt``).

    Args:
        reward: the reward; S0/P0 missing from it come from ``reference`` measured on this
            device, and ``reference=None`` makes the arch its own reference (reward = A).
        on_measured: called with S right after it is measured, before training.
        keep_weights: save the trained ``state_dict`` (with the arch string) there.
        check: hard constraints: called with the params and MACs, then again with S
            once measured; a violation ends the candidate FAIL "infeasible: ..." before
            any training.
        lock_dir: folder of the device locks (default: the system temp folder).
        step: S of this arch, already measured: a search passes its reference's, so the
            baseline trial records exactly the S0 every reward of the run divides by.
    """
    from nas.builder import build_model

    start = time.perf_counter()
    cost = model_cost(arch, proxy.resolution, data.num_classes)
    result = Evaluation(arch=str(arch), state="COMPLETE", params=cost.params, macs=cost.macs)
    known: dict[str, float | None] = {"params": cost.params, "macs": cost.macs, "step_time": None}
    if check is not None and (violation := check(known)) is not None:
        return _infeasible(result, violation, start)
    try:
        step = step or measure_arch(arch, num_classes=data.num_classes, proxy=proxy, device=device, cache=cache,
                                    lock_dir=lock_dir)
        result.step_time, result.step_time_p10, result.step_time_p90 = step.step_time, step.step_time_p10, step.step_time_p90
        result.inference_latency, result.peak_memory = step.inference_latency, step.peak_memory
        result.device, result.exclusive = step.device, step.exclusive
        if check is not None and (violation := check({**known, "step_time": step.step_time})) is not None:
            return _infeasible(result, violation, start)
        if on_measured:
            on_measured(step)
        if reference is None or reference == arch:
            reward = reward.with_reference(step_time=step.step_time, params=cost.params) \
                if reward.kind == "efficientnetv2" and reward.step_time_ref is None else reward
        else:
            reward = resolve_reward(reward, reference, num_classes=data.num_classes, proxy=proxy,
                                    device=device, cache=cache, lock_dir=lock_dir)
        torch.manual_seed(proxy.seed)
        model = build_model(arch, num_classes=data.num_classes)
        # Training holds the device shared; S is measured exclusive, so never beside a neighbour.
        with shared_device(device if device is not None else _default_device(), lock_dir=lock_dir):
            trained = train(model, data, proxy, device=device, on_epoch=on_epoch)
    except CandidateFailure as failure:
        return _failed(result, failure.reason, start)
    except (torch.cuda.OutOfMemoryError, MemoryError) as err:
        return _failed(result, f"oom: {err}".splitlines()[0][:200], start)
    except RuntimeError as err:
        # A network that cannot run at this resolution (e.g. collapses to 0x0) is invalid.
        if "out of memory" in str(err):
            return _failed(result, f"oom: {err}".splitlines()[0][:200], start)
        if "size" in str(err) or "shape" in str(err):
            return _failed(result, f"invalid: {err}".splitlines()[0][:200], start)
        raise
    result.accuracy, result.epoch_accuracies = trained.accuracy, list(trained.epoch_accuracies)
    result.train_seconds = trained.train_seconds
    result.reward = reward(accuracy=trained.accuracy, step_time=step.step_time, params=cost.params, macs=cost.macs)
    if keep_weights is not None:
        keep_weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"arch": str(arch), "num_classes": data.num_classes, "state_dict": state}, keep_weights)
    result.seconds = time.perf_counter() - start
    return result


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _infeasible(result: Evaluation, violation: Violation, start: float) -> Evaluation:
    result.state, result.reason, result.constraint_violation = "FAIL", violation.reason, violation.amount
    result.seconds = time.perf_counter() - start
    return result


def _failed(result: Evaluation, reason: str, start: float) -> Evaluation:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    result.state, result.reason = "FAIL", reason
    result.seconds = time.perf_counter() - start
    return result
