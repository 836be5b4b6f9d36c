"""Proxy fidelity: does the search's short proxy rank networks as longer training does?

A search trusts its proxy (a few epochs at reduced resolution) to rank candidates. After
the search, ``nas fidelity RUN --top K --random M --epochs E [--resolution R]`` retrains
the K best COMPLETE trials (by reward; by accuracy for a multi-objective run) and M other
ones drawn at random (seeded), with the same trainer, data split and per-trial seed as
the search but ``E`` epochs at ``R`` pixels, and measures how well the proxy's accuracy
ranks them as the long accuracy does (:mod:`nas.rank_stats`: Kendall's tau-b and
Spearman's rho with 90 % bootstrap intervals, the top-K overlap).

The results are kept with the run, in ``fidelity.json``, rewritten atomically after each
retrained trial. A trial retrained before with the same epochs and resolution is never
trained again, so an interrupted check resumes where it stopped and a rerun of the same
command only recomputes the statistics. The file holds one check per (epochs,
resolution); ``nas report`` shows them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nas.rank_stats import RankAgreement, rank_agreement

if TYPE_CHECKING:
    from nas.arch import Arch
    from nas.experiment import Experiment
    from nas.train import ProxyConfig

__all__ = ["FIDELITY_FILE", "LEVEL", "RELIABLE_TAU", "Retrained", "FidelityCheck", "Trainer", "check_fidelity",
           "read_checks", "select_trials"]

FIDELITY_FILE = "fidelity.json"  # the name a run directory's --fresh deletes (nas.study)
LEVEL = 0.9                      # coverage of the bootstrap intervals
RELIABLE_TAU = 0.5               # below it, the proxy's ranking is not to be trusted
_VERSION = 1
_RESAMPLES = 1000

#: ``trainer(number, arch, proxy) -> long accuracy``: one network trained with the long
#: setting (``proxy`` carries the trial's seed); a candidate's own failure raises
#: :class:`nas.train.CandidateFailure`.
Trainer = Callable[[int, "Arch", "ProxyConfig"], float]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Retrained:
    """One trial of the run, trained again with the long setting.

    Attributes:
        number: The trial's number in the run.
        arch: Its canonical arch string.
        proxy_accuracy: Its accuracy under the search's proxy (from the ledger).
        long_accuracy: Its accuracy after the long training; None when that training
            failed (``reason`` says why), which leaves it out of the statistics.
        chosen: ``"top"`` (among the K best) or ``"random"``.
        seconds: Wall time of the long training.
        reason: Why the long training failed (diverged, oom, invalid); else None.
    """

    number: int
    arch: str
    proxy_accuracy: float
    long_accuracy: float | None
    chosen: str
    seconds: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FidelityCheck:
    """A fidelity check of a run at one long setting, over its latest selection of trials.

    Attributes:
        epochs: Epochs of the long training.
        resolution: Image size of the long training.
        top: K: how many of ``trials`` are the run's best (they come first).
        trials: The retrained trials of the selection, top first, then the random ones.
        agreement: Rank statistics of proxy against long accuracy; None with fewer than
            two trials retrained.
    """

    epochs: int
    resolution: int
    top: int
    trials: tuple[Retrained, ...]
    agreement: RankAgreement | None

    @property
    def reliable(self) -> bool | None:
        """Whether Kendall's tau reaches :data:`RELIABLE_TAU`; None when it is undefined."""
        if self.agreement is None or math.isnan(self.agreement.kendall.estimate):
            return None
        return self.agreement.kendall.estimate >= RELIABLE_TAU

    def summary(self) -> str:
        """Kendall's tau and Spearman's rho with their intervals, and the top-K overlap, in one line."""
        a = self.agreement
        setting = f"{self.epochs} epochs at {self.resolution} px"
        if a is None:
            return f"proxy vs {setting}: fewer than 2 trials retrained, no ranking to compare"

        def figure(c) -> str:
            if math.isnan(c.estimate):
                return "undefined (equal accuracies)"
            interval = "undefined" if math.isnan(c.low) else f"{c.low:.2f} to {c.high:.2f}"
            return f"{c.estimate:.2f} ({c.level:.0%} interval {interval})"

        return (f"proxy vs {setting}, {a.n} trials: Kendall's tau {figure(a.kendall)}, Spearman's rho "
                f"{figure(a.spearman)}, top-{a.top_k} overlap {a.top_k_overlap:.2f}")

    def to_dict(self) -> dict[str, Any]:
        """What ``nas fidelity --json`` prints (undefined statistics are null)."""
        a = self.agreement
        return {
            "epochs": self.epochs, "resolution": self.resolution, "top": self.top,
            "kendall_tau": _finite(a.kendall.estimate) if a else None,
            "kendall_tau_ci": [_finite(a.kendall.low), _finite(a.kendall.high)] if a else None,
            "spearman_rho": _finite(a.spearman.estimate) if a else None,
            "spearman_rho_ci": [_finite(a.spearman.low), _finite(a.spearman.high)] if a else None,
            "top_k_overlap": a.top_k_overlap if a else None,
            "level": LEVEL,
            "reliable": self.reliable,
            "trials": [t.to_dict() for t in self.trials],
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


# -- selection ------------------------------------------------------------------------------------
def select_trials(rows: list[dict[str, Any]], *, top: int, random_count: int, key: str,
                  seed: int) -> list[tuple[dict[str, Any], str]]:
    """The K best COMPLETE, non-repeat trials by ``key`` and ``random_count`` others drawn at random.

    Ties on ``key`` go to the earlier trial; the random draw is seeded, so the same run
    and arguments always select the same trials.

    Args:
        rows: The run's ledger rows (:func:`nas.study.ledger`).
        top: K.
        random_count: M.
        key: ``"reward"`` or ``"accuracy"``.
        seed: Seed of the random draw.

    Returns:
        ``(row, "top" | "random")`` pairs, the top K first (best first), then the others
        in trial order.

    Raises:
        ValueError: With fewer than two eligible trials, or more asked for than exist.
    """
    eligible = [r for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None
                and r.get("accuracy") is not None and r.get(key) is not None]
    if len(eligible) < 2:
        raise ValueError(f"the run has {len(eligible)} COMPLETE trial(s) with a {key} (repeats not counted); "
                         "a fidelity check ranks at least 2")
    if top + random_count > len(eligible):
        raise ValueError(f"--top {top} --random {random_count} asks for {top + random_count} trials; the run has "
                         f"{len(eligible)} COMPLETE, non-repeat trials")
    ranked = sorted(eligible, key=lambda r: (-float(r[key]), r["number"]))
    best = ranked[:top]
    others = sorted(ranked[top:], key=lambda r: r["number"])
    drawn = sorted(random.Random(seed).sample(others, random_count), key=lambda r: r["number"])
    return [(r, "top") for r in best] + [(r, "random") for r in drawn]


# -- the check --------------------------------------------------------------------------------------
def check_fidelity(run: str | Path, *, top: int, random_count: int, epochs: int, resolution: int | None = None,
                   trainer: Trainer | None = None, log: Log | None = None) -> FidelityCheck:
    """Retrain the selection of a run with the long setting (what is not retrained yet) and rank it.

    Args:
        run: The run directory.
        top: K: the best trials to retrain (>= 1).
        random_count: M: other trials drawn at random (>= 0).
        epochs: Epochs of the long training (>= 1).
        resolution: Its image size; default the proxy's.
        trainer: Trains one network and returns its accuracy; default the search's
            trainer on the run's data (loaded on the first call only).
        log: Where a line per trial goes (default stderr).

    Returns:
        The check over the selected trials (also saved in ``RUN/fidelity.json``).

    Raises:
        FileNotFoundError: ``run`` is not a run directory.
        ValueError: Bad counts, epochs or resolution, or too few COMPLETE trials.
    """
    from nas.arch import parse_arch
    from nas.evaluator import trial_seed
    from nas.experiment import ExperimentError, from_dict
    from nas.study import RunDir, ledger
    from nas.train import CandidateFailure

    for name, value, low in (("--top", top, 1), ("--random", random_count, 0), ("--epochs", epochs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    log = log or _stderr
    run_dir = RunDir(run)
    config = run_dir.read_config()  # FileNotFoundError (one line) for a folder that is not a run
    try:
        experiment = from_dict(config, source=str(run_dir.config_path))
    except ExperimentError as err:
        raise ValueError(f"{run_dir.path}: its config.yaml does not describe an experiment ({err})") from None
    # ProxyConfig checks the long setting as it checks the proxy's (ValueError: resolution >= 8, ...)
    proxy = dataclasses.replace(experiment.proxy, epochs=epochs,
                                resolution=resolution if resolution is not None else experiment.proxy.resolution)
    key = "accuracy" if experiment.reward.multi_objective else "reward"
    selection = select_trials(ledger(run_dir.load_study()), top=top, random_count=random_count, key=key,
                              seed=experiment.seed)
    path = run_dir.path / FIDELITY_FILE
    checks = _read(path)
    entry = _entry(checks, proxy.epochs, proxy.resolution)
    done = {t.number: t for t in entry["retrained"]}
    trainer = trainer or _SearchTrainer(experiment, proxy.resolution)
    entry.update(top=top, random=random_count, selected=[row["number"] for row, _ in selection])
    for index, (row, chosen) in enumerate(selection, 1):
        number, arch = row["number"], str(row["arch"])
        head = f"[{index}/{len(selection)}] trial {number} ({chosen})"
        if number in done and done[number].arch == arch:
            done[number] = dataclasses.replace(done[number], chosen=chosen)  # another K may have moved it
            log(f"{head}: retrained before ({proxy.epochs} epochs at {proxy.resolution} px): {_outcome(done[number])}")
            continue
        start = time.perf_counter()
        seeded = dataclasses.replace(proxy, seed=trial_seed(experiment.seed, number))  # the search's seed
        try:
            accuracy, reason = float(trainer(number, parse_arch(arch), seeded)), None
        except CandidateFailure as failure:  # the candidate's own failure is a result here too
            accuracy, reason = None, failure.reason
        done[number] = Retrained(number, arch, float(row["accuracy"]), accuracy, chosen,
                                 round(time.perf_counter() - start, 3), reason)
        entry["retrained"] = sorted(done.values(), key=lambda t: t.number)
        _write(path, checks)  # after every trial: an interrupted check loses at most the one it was training
        log(f"{head}: proxy accuracy {row['accuracy']:.4f}, {_outcome(done[number])} "
            f"({proxy.epochs} epochs at {proxy.resolution} px, {done[number].seconds:.0f} s)")
    entry["retrained"] = sorted(done.values(), key=lambda t: t.number)
    _write(path, checks)
    return _check(entry, done)


def read_checks(run: str | Path) -> list[FidelityCheck]:
    """The fidelity checks kept with a run (none when ``fidelity.json`` is absent).

    Raises:
        ValueError: ``fidelity.json`` exists but cannot be read.
    """
    from nas.study import RunDir

    checks = _read(RunDir(run).path / FIDELITY_FILE)
    return [_check(entry, {t.number: t for t in entry["retrained"]}) for entry in checks]


def _outcome(trial: Retrained) -> str:
    if trial.long_accuracy is None:
        return f"the long training failed ({trial.reason})"
    return f"long accuracy {trial.long_accuracy:.4f}"


def _check(entry: dict[str, Any], done: dict[int, Retrained]) -> FidelityCheck:
    """The check over ``entry``'s latest selection, with its rank statistics."""
    trials = tuple(done[n] for n in entry["selected"] if n in done)
    ranked = [t for t in trials if t.long_accuracy is not None]
    top = sum(t.chosen == "top" for t in ranked)
    agreement = None
    if len(ranked) >= 2:
        agreement = rank_agreement([t.proxy_accuracy for t in ranked], [t.long_accuracy for t in ranked],
                                   k=max(1, top), level=LEVEL, resamples=_RESAMPLES, seed=0)
    return FidelityCheck(entry["epochs"], entry["resolution"], top, trials, agreement)


# -- training ---------------------------------------------------------------------------------------
class _SearchTrainer:
    """The search's trainer on the run's data split: data loaded once, at the first trial."""

    def __init__(self, experiment: Experiment, resolution: int) -> None:
        self.experiment, self.resolution = experiment, resolution
        self.data = None

    def __call__(self, number: int, arch: Arch, proxy: ProxyConfig) -> float:
        import torch

        from nas.builder import build_model
        from nas.data import load_dataset
        from nas.train import train

        exp = self.experiment
        if self.data is None:
            # the search's own split (same seed and minival share): accuracies compare with the proxy's
            decoded = exp.data.dataset in ("imagefolder", "synthetic")  # stored at a size only these take
            self.data = load_dataset(exp.data.dataset, data_dir=exp.data.data_dir, seed=exp.seed,
                                     val_fraction=exp.data.val_fraction,
                                     resolution=self.resolution if decoded else None)
        torch.manual_seed(proxy.seed)  # as nas.evaluate builds a candidate: the same initial weights
        model = build_model(arch, num_classes=self.data.num_classes)
        return train(model, self.data, proxy, device=None if exp.device == "auto" else exp.device).accuracy


# -- the file ---------------------------------------------------------------------------------------
def _entry(checks: list[dict[str, Any]], epochs: int, resolution: int) -> dict[str, Any]:
    for entry in checks:
        if entry["epochs"] == epochs and entry["resolution"] == resolution:
            return entry
    entry = {"epochs": epochs, "resolution": resolution, "top": 0, "random": 0, "selected": [], "retrained": []}
    checks.append(entry)
    return entry


def _read(path: Path) -> list[dict[str, Any]]:
    """The checks in ``fidelity.json`` (retrained trials as :class:`Retrained`); [] when there is none."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        checks = data["checks"]
        for entry in checks:
            entry["epochs"], entry["resolution"] = int(entry["epochs"]), int(entry["resolution"])
            entry["selected"] = [int(n) for n in entry["selected"]]
            entry["retrained"] = [Retrained(**t) for t in entry["retrained"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a fidelity file nas can read ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:120]}); delete it to check again") from None
    return checks


def _write(path: Path, checks: list[dict[str, Any]]) -> None:
    """Replace ``fidelity.json`` atomically: a reader never sees half a file."""
    payload = {"version": _VERSION, "checks": [{**e, "retrained": [t.to_dict() for t in e["retrained"]]}
                                               for e in checks]}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
