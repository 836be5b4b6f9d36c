"""What a search will cost on this machine, before it runs: ``nas estimate``.

A trial of a search is mostly S × training steps, but not only. Per trial of an
architecture *a* (S_a its training-step time, I_a its inference latency, both measured on
this device at the proxy batch):

    trial(a) = ledger + fixed + measure(a) + E' × k × (steps · S_a + passes · I_a)

- ``steps`` = ⌊training images / batch⌋ per epoch (the trainer drops the ragged last
  batch) and ``passes`` = validation images / batch (the evaluation runs batches of 2·batch);
  training images are those left after the minival split;
- ``measure(a)``: measuring S, i.e. the measurement's warm-up and timing windows
  (:func:`nas.measure.measure_step_time`); nothing when S is in the step-time cache;
- ``k``, how much longer an epoch of real training takes than its steps and evaluation
  passes at S and I (augmentation, loss checks, the schedule), ``fixed`` per trial (cost,
  building the model, the data to the device, kept weights) and ``ledger`` per trial (the
  controller's ask, the study's writes) are *measured*: the reference (the space's
  baseline) is trained for two epochs through the search's own evaluator, its S measured
  again right after, and two trials are asked and recorded in a scratch study
  (:func:`calibrate`). ``k`` is a factor rather than an added constant: on a shared,
  noisy device a constant taken at one moment can come out negative;
- ``E'`` is the proxy's epochs, or the epochs a trial is expected to run under the pruner
  (:func:`expected_epochs`: the rung schedule, with the share that goes on at a rung).

S is measured for the reference and a seeded sample of K architectures of the space; the
per-trial figures are the median and the 10th/90th percentiles over the sample, the totals
use its mean. One-off costs: a fresh process's imports, loading the data, creating the
study, the reference's S (nothing once cached, and the estimate caches it). The wall time
spreads the trials over the backend's parallel slots: local ``workers`` (at most the CPU
cores), Ray's ``max_concurrent`` (at most the GPUs over ``gpus_per_trial``); the simulated
backend's time is its virtual clock's.

The estimate fills the step-time cache with what it measured, so the search that follows
finds the reference's S there. Its candidates are other architectures, measured afresh,
unless this very search (same seed and controller) ran on this device before and
proposes the same candidates again: the share of its first candidates, replayed from the
controller in the scratch study, that are in the cache is taken for all of them.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nas.experiment import Experiment
from nas.runtime import RuntimeOptions

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.measure import CacheCheck, StepTime

__all__ = ["Calibration", "Estimate", "Measure", "DEFAULT_SAMPLE", "calibrate", "estimate", "expected_epochs",
           "first_order", "measure_seconds"]

DEFAULT_SAMPLE = 8
#: ``measure(arch) -> StepTime``: S of ``arch`` at the proxy's batch and resolution on this
#: device (the step-time cache first).
Measure = Callable[["Arch"], "StepTime"]
Log = Callable[[str], None]

# What a search process does before its first trial, timed in a fresh interpreter: its imports, then
# its evaluator (the data loaded, S0 from the cache). argv[1]: a pickled nas.run.Run.
_STARTUP = ("import pickle, sys; import nas.cli.search, nas.search, nas.backends.local; "
            "pickle.load(open(sys.argv[1], 'rb')).training_evaluator()")
_CALIBRATION_EPOCHS = 2  # two epochs tell the first epoch's start-up from an epoch's own time
# The search's first candidates, replayed from its controller to look them up in the cache: the
# seeded controllers draw their first few at random, before any result matters (so the replay,
# told made-up results, proposes what the search will).
_REPLAYED = 3


@dataclass(frozen=True)
class Calibration:
    """What a search spends on this machine besides S × steps, measured by :func:`calibrate`.

    Attributes:
        train_images: Training images after the minival split.
        val_images: Minival images (evaluated after every epoch).
        num_classes: Classes of the data.
        reference: The reference's S on this device.
        cached_share: The share of the search's candidates whose S it will find in the
            cache: the share of its first candidates (replayed from its controller) that
            are there; above 0 when this search ran here before.
        startup_seconds: A fresh process preparing as a search does before its first
            trial: its imports, loading the data, the reference's S from the cache.
        study_seconds: Creating the run's study (config, storage, the baseline queued).
        ledger_seconds: Per trial: the controller's ask and the study's writes.
        trial_seconds: Per trial, besides measuring S and the epochs: cost, building the
            model, the data to the device, the first epoch's warm-up, weights kept.
        epoch_factor: An epoch's seconds over steps × S + the evaluation's passes × I
            (at least 1).
        reference_at_start: Whether the search measures the reference's S at its start
            (the efficientnetv2 reward's S0; a relative step-time bound), and the baseline
            trial reuses it; else the baseline trial measures it.
        load_ratio: The reference's S measured now over its cached S (1 when it was not
            cached): how much slower the device is now than when the cache was filled.
            Cached S of other architectures are timed at this ratio.
        stale_cache: Whether the cache was found filled at another load of the device
            (:class:`nas.measure.CacheCheck`): its entries for the device were dropped, so
            the search measures every S afresh.
    """

    train_images: int
    val_images: int
    num_classes: int
    reference: StepTime
    cached_share: float = 0.0
    startup_seconds: float = 0.0
    study_seconds: float = 0.0
    ledger_seconds: float = 0.0
    trial_seconds: float = 0.0
    epoch_factor: float = 1.0
    load_ratio: float = 1.0
    reference_at_start: bool = True
    stale_cache: bool = False


@dataclass(frozen=True)
class Estimate:
    """What a search will cost; :meth:`to_dict` is ``nas estimate --json``.

    Attributes:
        trial_seconds: Median seconds of a candidate trial over the sample.
        trial_seconds_p10: Its 10th percentile.
        trial_seconds_p90: Its 90th percentile.
        device_hours: Device time of the whole budget (one-off S included), hours; with
            Ray's fractional ``gpus_per_trial``, GPU-hours.
        wall_seconds: Wall time of the search with the backend's parallelism.
        sampled: Architectures of the sample whose S was measured (the reference aside).
        trials: The budget.
        parallel: Trials that run at once.
        backend: The experiment's backend.
        virtual: True for the simulated backend: times are its virtual clock's.
        step_time: Median S of the sample, seconds.
        reference_step_time: The reference's S, seconds.
        steps_per_epoch: Training steps per epoch.
        epochs: The proxy's epochs.
        expected_epochs: Epochs a trial is expected to run (below ``epochs`` under a pruner).
        cached_share: The share of the candidates whose S the search finds in the cache.
        measure_seconds: Median seconds a candidate spends measuring S (cached ones none).
        one_off_seconds: Before the first trial: the three below (and each local worker's
            own start-up).
        startup_seconds: A search process's start: imports, the data, S0 from the cache.
        study_seconds: Creating the study.
        reference_seconds: Measuring the reference's S at the start (0 when cached).
        pruner_saving_seconds: Device seconds the pruner is expected to save.
        infeasible_share: Share of the sample that breaks the hard constraints (drawn,
            checked and discarded by the search without using the budget).
        notes: The assumptions behind the figures, in words.
    """

    trial_seconds: float
    trial_seconds_p10: float
    trial_seconds_p90: float
    device_hours: float
    wall_seconds: float
    sampled: int
    trials: int
    parallel: int
    backend: str
    virtual: bool
    step_time: float
    reference_step_time: float
    steps_per_epoch: int
    epochs: int
    expected_epochs: float
    cached_share: float
    measure_seconds: float
    one_off_seconds: float
    startup_seconds: float
    study_seconds: float
    reference_seconds: float
    pruner_saving_seconds: float
    infeasible_share: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (seconds rounded to milliseconds)."""
        return {k: round(v, 3) if isinstance(v, float) and k != "device_hours" else
                list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def summary(self) -> str:
        """One line: the wall time, device-hours and a trial's seconds."""
        clock = " (virtual)" if self.virtual else ""
        return (f"estimate: {self.trials} trials in {_duration(self.wall_seconds)}{clock} with {self.parallel} at "
                f"once, {self.device_hours:.3g} device-hours; a trial {self.trial_seconds:.1f} s "
                f"(p10 {self.trial_seconds_p10:.1f} s, p90 {self.trial_seconds_p90:.1f} s)")


# -- the estimate ----------------------------------------------------------------------------------
def estimate(experiment: Experiment, runtime: RuntimeOptions, *, sample: int = DEFAULT_SAMPLE,
             measure: Measure | None = None, calibration: Calibration | None = None, cores: int | None = None,
             gpus: int | None = None, log: Log | None = None) -> Estimate:
    """What the search of ``experiment`` will cost on this machine.

    Args:
        experiment: The validated experiment.
        runtime: This machine's settings (the step-time cache, the device locks).
        sample: K, how many architectures of the space to measure besides the reference.
        measure: S of an architecture on this device; default the real measurement at the
            proxy's batch and resolution, the step-time cache first.
        calibration: This machine's overheads; default :func:`calibrate`.
        cores: CPU cores (the cap on local workers); default ``os.cpu_count()``.
        gpus: GPUs a local Ray may use; default those torch sees.
        log: Where progress lines go (default stderr).

    Returns:
        The :class:`Estimate`.

    Raises:
        ValueError: ``sample`` < 1, or every sampled architecture breaks the constraints.
        nas.data.DataError: The data cannot be loaded.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"the sample must be a whole number >= 1 of architectures, got {sample!r}")
    log = log or _stderr
    archs = _sample(experiment, sample)
    if experiment.backend == "simulated":
        return _simulated(experiment, archs)
    calibration = calibration or calibrate(experiment, runtime, log=log)
    check = None
    if measure is None:
        from nas.measure import CacheCheck

        check = CacheCheck(runtime.step_time_cache(), log, checks=1)  # the calibration checked the reference
        measure = _measure_on_device(experiment, runtime, calibration.num_classes, check)
    steps = []
    for index, arch in enumerate(archs, 1):
        step = measure(arch)
        log(f"S of sampled architecture {index}/{len(archs)}: {step.step_time * 1e3:.2f} ms"
            + (" (cached)" if step.cached else ""))
        steps.append(_at_load(step, calibration.load_ratio) if step.cached else step)
    if check is not None and check.stale:  # a sampled entry disagreed: the search will find nothing cached
        calibration = dataclasses.replace(calibration, stale_cache=True, load_ratio=check.load_ratio)
    return _combine(experiment, calibration, archs, steps, cores=cores or os.cpu_count() or 1,
                    gpus=_gpus() if gpus is None else gpus)


def _combine(experiment: Experiment, cal: Calibration, archs: list[Arch],
             steps: list[StepTime], *, cores: int, gpus: int) -> Estimate:
    """The arithmetic of the module docstring."""
    proxy, notes = experiment.proxy, []
    epochs = expected_epochs(experiment.pruner, proxy.epochs, experiment.trials)
    if experiment.pruner != "none":
        notes.append(_PRUNER_NOTES[experiment.pruner])

    def epoch(step: StepTime) -> float:
        return cal.epoch_factor * _epoch_at_s(step, cal.train_images, cal.val_images, proxy.batch_size)

    def trial(step: StepTime, cached: float, run_epochs: float) -> float:
        measuring = (1 - cached) * measure_seconds(step)  # cached: the chance that S is in the cache
        return cal.ledger_seconds + cal.trial_seconds + measuring + run_epochs * epoch(step)

    cached = cal.cached_share
    if cal.stale_cache:
        cached = 0.0
        notes.append(f"the step-time cache was filled at another load of this device ({cal.load_ratio:.2f}x the S "
                     "of now): its entries for the device were dropped, so the search measures every S afresh")
    elif cal.load_ratio != 1.0:
        notes.append(f"cached S are timed at the load of now ({cal.load_ratio:.2f}x what the cache holds)")
    notes.append(f"{cached:.0%} of the search's first candidates are in the step-time cache (this search ran here "
                 "before): the same share of its candidates is taken as cached" if cached else
                 "each candidate's S is measured afresh (the estimate caches the reference's S only)")
    feasible = [s for a, s in zip(archs, steps) if _feasible(experiment, cal, a, s)]
    if not feasible:
        raise ValueError(f"all {len(archs)} sampled architectures break the constraints "
                         f"{experiment.constraints.to_dict()}: the search would hardly find a candidate; relax them")
    candidates = np.array([trial(s, cached, epochs) for s in feasible])
    full = np.array([trial(s, cached, proxy.epochs) for s in feasible])
    infeasible_share = 1 - len(feasible) / len(archs)
    # a draw that breaks a bound is discarded before training: its ask, and its S when S is bounded
    discard = cal.ledger_seconds + (0.0 if experiment.constraints.step_time is None
                                    else (1 - cached) * float(np.mean([measure_seconds(s) for s in steps])))
    draws = infeasible_share / (1 - infeasible_share)

    reference, baseline = experiment.reference_arch, 0
    if reference is not None and experiment.space.contains(reference):
        baseline = 1  # the baseline is trained first, under the same proxy; its S is cached
    # S0 is measured at the start (a cached one is checked against the device as it is now),
    # and the baseline trial reuses it; a reward without S0 measures it in the baseline trial
    reference_once = measure_seconds(cal.reference) if cal.reference_at_start else 0.0
    reference_trial = trial(cal.reference, float(cal.reference_at_start), proxy.epochs)
    others = experiment.trials - baseline
    device = baseline * reference_trial + others * (float(candidates.mean()) + draws * discard)
    saving = others * float(full.mean() - candidates.mean())

    parallel, contention = _parallel(experiment, cores, gpus, notes)
    local_workers = experiment.backend == "local" and parallel > 1
    # several local workers each start a process and load the data, at the same time
    one_off = cal.startup_seconds * (2 if local_workers else 1) + cal.study_seconds + reference_once
    longest = max(reference_trial if baseline else 0.0, float(candidates.max()))
    wall = one_off + max(device * contention / parallel, longest)
    share = experiment.ray.gpus_per_trial if experiment.backend == "ray" and experiment.ray.gpus_per_trial else 1.0
    return Estimate(
        trial_seconds=float(np.median(candidates)), trial_seconds_p10=float(np.percentile(candidates, 10)),
        trial_seconds_p90=float(np.percentile(candidates, 90)),
        device_hours=(device + reference_once) * share / 3600,
        wall_seconds=wall, sampled=len(archs), trials=experiment.trials, parallel=parallel,
        backend=experiment.backend, virtual=False, step_time=float(np.median([s.step_time for s in steps])),
        reference_step_time=cal.reference.step_time, steps_per_epoch=_steps(cal.train_images, proxy.batch_size),
        epochs=proxy.epochs,
        expected_epochs=epochs, cached_share=cached,
        measure_seconds=(1 - cached) * float(np.median([measure_seconds(s) for s in feasible])),
        one_off_seconds=one_off, startup_seconds=cal.startup_seconds, study_seconds=cal.study_seconds,
        reference_seconds=reference_once, pruner_saving_seconds=saving, infeasible_share=infeasible_share,
        notes=tuple(notes))


def first_order(experiment: Experiment, reference: StepTime, train_images: int, val_images: int) -> str:
    """A search's opening estimate, one line, from what it measured anyway: the data and S0.

    Each trial is taken to cost measuring its S plus its epochs of steps at the
    reference's S and evaluation passes at its inference latency, with none of the
    overheads :func:`calibrate` measures and the reference standing for the whole space:
    a first figure, made without extra work, that the progress lines' ETA then replaces.
    ``nas estimate`` measures the rest.
    """
    proxy = experiment.proxy
    epoch = _epoch_at_s(reference, train_images, val_images, proxy.batch_size)
    trial = measure_seconds(reference) + proxy.epochs * epoch
    workers = min(experiment.workers, os.cpu_count() or 1) if experiment.backend == "local" else 1
    total = trial * experiment.trials / workers
    return (f"estimate: about {_duration(total)} for {experiment.trials} trials, {trial:.1f} s a trial at the "
            f"baseline's S ({proxy.epochs} epochs of {_steps(train_images, proxy.batch_size)} steps at "
            f"{reference.step_time * 1e3:.2f} ms, and measuring S); `nas estimate` samples the space")


def _at_load(step: StepTime, ratio: float) -> StepTime:
    """A cached S as the device would time it now (its speed ``ratio`` times the cache's)."""
    return dataclasses.replace(step, step_time=step.step_time * ratio, step_time_p10=step.step_time_p10 * ratio,
                               step_time_p90=step.step_time_p90 * ratio,
                               inference_latency=step.inference_latency * ratio)


def _steps(train_images: int, batch: int) -> int:
    """Training steps per epoch: the trainer drops the ragged last batch."""
    return max(1, train_images // min(batch, train_images))


def _epoch_at_s(step: StepTime, train_images: int, val_images: int, batch: int) -> float:
    """An epoch's seconds if each step took S and each evaluation pass I.

    The evaluation runs batches of 2·batch, each about two passes of I (measured at the
    training batch): val_images / batch passes.
    """
    return _steps(train_images, batch) * step.step_time + val_images / batch * step.inference_latency


def _feasible(experiment: Experiment, cal: Calibration, arch: Arch, step: StepTime) -> bool:
    from nas.cost import model_cost

    constraints = experiment.constraints
    if not constraints:
        return True
    resolution = experiment.proxy.resolution
    cost = model_cost(arch, resolution, cal.num_classes)
    baseline: dict[str, float | None] = {"step_time": cal.reference.step_time}
    if experiment.reference_arch is not None:
        ref = model_cost(experiment.reference_arch, resolution, cal.num_classes)
        baseline.update(params=ref.params, macs=ref.macs)
    values = {"params": cost.params, "macs": cost.macs, "step_time": step.step_time}
    return constraints.check(values, baseline) is None


def _parallel(experiment: Experiment, cores: int, gpus: int, notes: list[str]) -> tuple[int, float]:
    """Trials at once, and how much slower each runs for sharing a device with the others."""
    if experiment.backend == "ray":
        ray = experiment.ray
        parallel = ray.max_concurrent
        if ray.gpus_per_trial > 0 and not ray.address:
            fit = int(gpus / ray.gpus_per_trial)
            if fit < 1:
                raise ValueError(f"ray.gpus_per_trial {ray.gpus_per_trial} needs a GPU; this machine has none "
                                 "that torch sees")
            parallel = min(parallel, fit)
        notes.append(f"Ray runs {parallel} trials at once on devices like this one; Ray's own start-up per trial "
                     "is not counted")
        return parallel, 1.0
    parallel = min(experiment.workers, cores)  # as the local backend caps them
    if parallel > 1:
        # the local workers share this machine's one device: on a CPU they split the cores
        notes.append(f"{parallel} local workers share this device: compute is not faster, only overlapped")
        return parallel, float(parallel)
    return 1, 1.0


# -- measuring S -----------------------------------------------------------------------------------
def measure_seconds(step: StepTime) -> float:
    """Seconds that measuring S took (or would take) for a network with these figures.

    The measurement's protocol (:func:`nas.measure.measure_step_time`): training steps
    for a warm-up of at least ``min_time / 4``, then steps timed for at least ``min_time``
    (``step.repeats`` of them), then inference warmed up and timed for at least
    ``min_time / 3``.
    """
    warmup, repeats, min_time = _protocol()
    train = max(warmup * step.step_time, min_time / 4) + max(step.repeats * step.step_time, min_time)
    latency = step.inference_latency
    infer = max(1, min(warmup, 2)) * latency + max(max(3, repeats) * latency, min_time / 3)
    return train + infer


def _protocol() -> tuple[int, int, float]:
    """(warm-up steps, timed steps, seconds timed): the measurement's own defaults, which the
    search uses, read from its signature so that this arithmetic follows them."""
    from nas.measure import measure_step_time

    parameters = inspect.signature(measure_step_time).parameters
    return parameters["warmup"].default, parameters["repeats"].default, parameters["min_time"].default


def _measure_on_device(experiment: Experiment, runtime: RuntimeOptions, num_classes: int,
                       check: CacheCheck | None = None) -> Measure:
    """S of an architecture on this device; with ``check``, the first cache hit is checked against now."""
    from nas.evaluate import measure_arch

    device = None if experiment.device == "auto" else experiment.device
    cache = runtime.step_time_cache()

    def measure(arch: Arch, cache=cache) -> StepTime:
        return measure_arch(arch, num_classes=num_classes, proxy=experiment.proxy, device=device, cache=cache,
                            lock_dir=runtime.lock_dir)

    if check is None:
        return measure
    return lambda arch: check(measure(arch), str(arch), lambda: measure(arch, None), num_classes=num_classes)


def _sample(experiment: Experiment, count: int) -> list[Arch]:
    """``count`` distinct architectures of the space, none the reference, seeded by the experiment."""
    space, reference = experiment.space, experiment.reference_arch
    rng = random.Random(f"estimate:{experiment.seed}")  # its own stream: not the controller's candidates
    wanted = min(count, space.size - (1 if reference is not None and space.contains(reference) else 0))
    seen = {str(reference)} if reference is not None else set()
    archs: list[Arch] = []
    for _ in range(100 * count):
        if len(archs) >= wanted:
            break
        arch = space.sample(rng)
        if str(arch) not in seen:
            seen.add(str(arch))
            archs.append(arch)
    if not archs:
        raise ValueError(f"space {experiment.space.name!r} has no architecture besides the reference to sample")
    return archs


# -- calibration -----------------------------------------------------------------------------------
def calibrate(experiment: Experiment, runtime: RuntimeOptions, *, log: Log | None = None) -> Calibration:
    """Measure what a search spends on this machine besides S × steps (see the module docstring).

    Trains the reference (the space's baseline, else a sampled architecture) for two
    epochs through the search's own evaluator, times a fresh process's start, and asks and
    records the baseline and the controller's first candidates in a scratch study, all in
    a temporary folder. Measures the reference's S on the way (and so caches it for the
    search), and once more right after the training, so that the epoch factor compares
    training and S at the same load of the device (a cached S may be from another hour).

    Raises:
        nas.data.DataError: The data cannot be loaded.
    """
    from nas.run import Run

    log = log or _stderr
    reference = experiment.reference_arch or experiment.space.sample(experiment.seed)
    scratch = dataclasses.replace(experiment, storage=None)  # the study's writes timed on SQLite in a temp folder
    short = dataclasses.replace(scratch, reference=reference,
                                proxy=dataclasses.replace(experiment.proxy, epochs=_CALIBRATION_EPOCHS))
    with tempfile.TemporaryDirectory(prefix="nas-estimate-") as tmp:
        log(f"loading the data and measuring S of the reference {reference}")
        evaluator = Run(short, Path(tmp) / "calibration", runtime).training_evaluator()  # S0 measured, or checked
        data = evaluator.data
        log("timing a search process's start")
        startup = _startup_seconds(Run(scratch, Path(tmp) / "startup", runtime), Path(tmp) / "run.pickle")
        at_start = evaluator.reference_step is not None
        if at_start:  # it measured S0 (or checked the cached one) once: that is counted apart
            startup = max(0.0, startup - measure_seconds(evaluator.reference_step))
        log(f"training the reference for {_CALIBRATION_EPOCHS} epochs, then measuring its S again")
        fixed, epoch, attrs = _time_training(evaluator, reference)
        fresh = dataclasses.replace(runtime, use_cache=False)  # S at the load the training just saw
        step = _measure_on_device(experiment, fresh, data.num_classes)(reference)
        # at least 1: an epoch does the work of its steps and passes, and more; below 1 the device
        # was busier while S was measured than while the reference trained, which says nothing of the search
        factor = max(1.0, epoch / _epoch_at_s(step, len(data.train), len(data.val), experiment.proxy.batch_size))
        study, ledger, candidates = _time_bookkeeping(Run(scratch, Path(tmp) / "study", runtime), attrs)
    cached_share = 0.0
    if runtime.use_cache and candidates:
        cache, proxy = runtime.step_time_cache(), experiment.proxy
        hits = [cache.get(arch, step.device, batch=proxy.batch_size, resolution=proxy.resolution,
                          num_classes=data.num_classes) is not None for arch in candidates]
        cached_share = sum(hits) / len(hits)
    return Calibration(train_images=len(data.train), val_images=len(data.val), num_classes=data.num_classes,
                       reference=step, reference_at_start=at_start,
                       cached_share=cached_share, startup_seconds=startup, study_seconds=study,
                       ledger_seconds=ledger, trial_seconds=fixed, epoch_factor=factor,
                       load_ratio=evaluator.cache_check.load_ratio, stale_cache=evaluator.cache_check.stale)


def _startup_seconds(run, path: Path) -> float:
    """A fresh interpreter doing what a search process does before its first trial (and exiting)."""
    import pickle

    path.write_bytes(pickle.dumps(run))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _STARTUP, str(path)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"a fresh search process failed to start here: {last}")
    return seconds


def _time_training(evaluator, reference: Arch) -> tuple[float, float, dict[str, Any]]:
    """(fixed seconds per trial, seconds of an epoch, the trial's attributes) of a real short training.

    An evaluator that did not measure the reference's S at its start measures it in the
    trial; that time is left out of the fixed seconds.
    """
    from nas.ledger import Proposal

    stamps: dict[str, float] = {}
    epochs: list[float] = []
    start = time.perf_counter()
    attrs = evaluator.evaluate(Proposal(trial_id=0, number=0, params={}, arch=str(reference), baseline=True),
                               report=lambda epoch, accuracy: epochs.append(time.perf_counter()),
                               measured=lambda known: stamps.setdefault("measured", time.perf_counter()))
    end = time.perf_counter()
    if attrs["state"] != "COMPLETE" or len(epochs) != _CALIBRATION_EPOCHS:
        raise ValueError(f"the reference {reference} did not train on this data ({attrs.get('reason')}); the "
                         "estimate calibrates on it")
    epoch = epochs[1] - epochs[0]  # the second epoch: no start-up in it
    fixed = (end - start) - _CALIBRATION_EPOCHS * epoch  # with S from the cache: cost, lookup, set-up
    if evaluator.reference_step is None:  # S measured inside: that time is measure_seconds' business
        fixed -= stamps["measured"] - start
    return max(0.0, fixed), epoch, attrs


def _time_bookkeeping(run, attrs: dict[str, Any]) -> tuple[float, float, list[str]]:
    """(creating the study, a candidate's ledger work, the search's first candidates) in a scratch study.

    Each trial is asked, told what is measured, reported per epoch and recorded (with the
    reference's ``attrs``), as the search's worker does: the baseline, then the
    controller's first :data:`_REPLAYED` candidates.
    """
    import optuna

    from nas.search import prepare

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as a search does: its lines are its own
    accuracies, epochs = attrs["epoch_accuracies"], run.experiment.proxy.epochs
    start = time.perf_counter()
    with prepare(run, fresh=False, log=lambda message: None) as ledger:
        study = time.perf_counter() - start
        cycles, candidates = [], []
        while len(candidates) < _REPLAYED:
            start = time.perf_counter()
            proposal = ledger.ask()
            if proposal is None:  # a budget smaller than the replay
                break
            ledger.measured(proposal, {k: attrs.get(k) for k in ("params", "macs", "step_time")})
            for epoch in range(1, epochs + 1):
                ledger.report(proposal, epoch, accuracies[min(epoch, len(accuracies)) - 1])
            ledger.record(proposal, attrs)
            if not proposal.baseline:  # a candidate's: the controller was asked
                cycles.append(time.perf_counter() - start)
                candidates.append(proposal.arch)
    return study, float(np.mean(cycles)) if cycles else 0.0, candidates


# -- pruners ---------------------------------------------------------------------------------------
_PRUNER_NOTES = {
    "median": "median pruner: from its 4th trial, half the trials are expected to stop after epoch 1",
    "successive_halving": "successive halving: 1/4 of the trials are expected to go on at each rung (epochs 1, "
                          "4, 16, ...)",
    "hyperband": "hyperband: its brackets taken as successive halving with 1/3 going on at each rung, "
                 "shares equal",
    "mo_asha": "mo_asha: 1/3 of the trials are expected to go on at each rung (epochs 1, 3, 9, ...), all of the "
               "first 2 at a rung",
}


def expected_epochs(pruner: str, epochs: int, trials: int) -> float:
    """Epochs a trial is expected to train under ``pruner``, averaged over ``trials`` trials.

    A rung schedule with a stated share going on at each rung (the pruner's own aim): a
    fluid model in which trials reach each rung in turn, the first ``startup`` at a rung
    always go on and later ones with probability ``keep``. Epochs past the last rung are
    trained in full.
    """
    plans = _rung_plans(pruner, epochs)
    if not plans:
        return float(epochs)
    totals = []
    for rungs, keep, startup in plans:
        reached = [0.0] * len(rungs)
        total = 0.0
        for _ in range(trials):
            alive, trained, before = 1.0, 0.0, 0
            for index, rung in enumerate(rungs):
                trained += alive * (rung - before)
                before = rung
                share = 1.0 if reached[index] < startup else keep
                reached[index] += alive
                alive *= share
            total += trained + alive * (epochs - before)
        totals.append(total / trials)
    return float(np.mean(totals))


def _rung_plans(pruner: str, epochs: int) -> list[tuple[tuple[int, ...], float, int]]:
    """Per bracket: (rungs before the last epoch, share that goes on, trials that always go on)."""
    from nas.pruners import MOASHAPruner

    def rungs(first: int, eta: int) -> tuple[int, ...]:
        out, rung = [], first
        while rung < epochs:
            out.append(rung)
            rung *= eta
        return tuple(out)

    if pruner == "median":  # MedianPruner(n_startup_trials=3, n_warmup_steps=1) in nas.pruners
        return [(rungs(1, epochs + 1), 0.5, 3)]
    if pruner == "successive_halving":  # Optuna's reduction factor 4, min_resource 1
        return [(rungs(1, 4), 0.25, 1)]
    if pruner == "hyperband":  # Optuna's reduction factor 3; bracket b starts at 3**b
        brackets = [rungs(3 ** b, 3) for b in range(int(math.log(epochs, 3)) + 1)] if epochs > 1 else [()]
        return [(r, 1 / 3, 1) for r in brackets]
    if pruner == "mo_asha":
        moasha = MOASHAPruner(max_resource=epochs)
        return [(tuple(moasha.rungs()), 1 / moasha.eta, moasha.eta - 1)]
    return []


# -- the simulated backend -------------------------------------------------------------------------
def _simulated(experiment: Experiment, archs: list[Arch]) -> Estimate:
    """The simulator's own (virtual) seconds: no device is used."""
    from nas.ledger import Proposal
    from nas.simulate import simulated_evaluator

    evaluator = simulated_evaluator(experiment)
    results = [evaluator.evaluate(Proposal(0, number, {}, str(arch))) for number, arch in enumerate(archs, 1)]
    done = [r for r in results if r.attrs["state"] == "COMPLETE"]
    if not done:
        raise ValueError(f"none of the {len(archs)} sampled architectures completes in the simulator "
                         f"({results[0].attrs.get('reason')})")
    epochs, full = experiment.proxy.epochs, np.array([r.seconds for r in done])
    expected = expected_epochs(experiment.pruner, epochs, experiment.trials)
    seconds = full * expected / epochs
    workers = experiment.simulated.workers
    device = experiment.trials * float(seconds.mean())
    step_times = [float(r.attrs["step_time"]) for r in done]
    return Estimate(
        trial_seconds=float(np.median(seconds)), trial_seconds_p10=float(np.percentile(seconds, 10)),
        trial_seconds_p90=float(np.percentile(seconds, 90)), device_hours=device / 3600,
        wall_seconds=max(device / workers, float(seconds.max())), sampled=len(archs), trials=experiment.trials,
        parallel=workers, backend="simulated", virtual=True, step_time=float(np.median(step_times)),
        reference_step_time=float(np.median(step_times)), steps_per_epoch=experiment.simulated.steps_per_epoch,
        epochs=epochs, expected_epochs=expected, cached_share=0.0, measure_seconds=0.0, one_off_seconds=0.0,
        startup_seconds=0.0, study_seconds=0.0, reference_seconds=0.0,
        pruner_saving_seconds=experiment.trials * float((full - seconds).mean()),
        infeasible_share=1 - len(done) / len(results),
        notes=("virtual seconds of the simulator's clock; the simulated search itself takes moments",))


# -- helpers ---------------------------------------------------------------------------------------
def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
