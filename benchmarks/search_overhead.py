"""Per-trial overhead of a real search outside proxy training.

Runs a small real search (``experiments/quickstart.yaml``: the ``tiny`` space on digits,
local backend, one worker) in a temporary run directory and times every phase of it by
wrapping the functions that do the work, from this script only (nothing in ``nas`` is
changed):

    sampler          the controller's methods (infer_relative_search_space,
                     sample_relative, sample_independent, before_trial, after_trial)
    storage          every public method of the Optuna storage (RDBStorage, and the
                     _CachedStorage in front of it) and their constructors (schema
                     creation): SQLite reads and writes
    ask / tell       ``optuna.Study.ask`` / ``tell`` themselves (what is not sampler or
                     storage inside them)
    report_prune     ``Trial.report`` / ``Trial.should_prune`` (the pruner, per epoch)
    cost             ``model_cost`` (exact params/MACs on the meta device)
    build            ``build_model`` (in evaluate and inside the S measurement)
    measure_S        ``measure_arch`` (S: warm-up + timed training steps, cache lookups)
    device_lock      entering ``exclusive_device`` / ``shared_device`` (waiting for the
                     device lock; private to this run unless --shared-locks)
    reward_resolve   ``resolve_reward`` (S0/P0 of the reference, cached after the first)
    train            ``nas.evaluate.train`` (the proxy training), split into
                     train_steps (``_Run.train_one_epoch``), validation
                     (``_Run.evaluate``) and train_setup (the rest of the call)
    evaluate / candidate / run_trial / find_duplicate / record / budget / progress
                     the glue of ``nas.search`` and ``nas.evaluate`` (own time only)
    data_load        ``load_dataset`` (once per worker, in setup)
    unattributed     the trial's wall time not inside any wrapped function (file lock,
                     Python glue)

Times are *exclusive*: a phase's time excludes the wrapped phases it calls, so the phases
of a trial add up to its wall time. A trial's window runs from the worker's budget check
before its ``ask`` to the next one (so it includes telling, logging and progress). Setup
(everything before the first trial: prepare, study creation, baseline enqueue, data load,
S0 of the reference) is reported separately and also amortized over the trials.

As a cross-check it also reads the ledger (``RunDir(...).load_study()``): per trial
``datetime_complete - datetime_start`` against the ``seconds`` user attribute (evaluate's
total), and the gaps between consecutive trials.

The step-time cache is a fresh, empty folder (``NAS_CACHE_DIR`` is pointed there) so that
S is really measured, as in a new search where every candidate is new; ``--cache-dir``
uses another one. Torch runs on ``--threads`` threads (default 1, to keep the benchmark's
CPU use modest; training then dominates less than with all cores, see the README).

    python benchmarks/search_overhead.py [--trials 6] [--threads 1] [--epochs 3]
        [--override controller.name=random ...] [--out benchmarks/results/search_overhead.json]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The phases, in table order; "training" is everything under nas.evaluate.train.
TRAINING = ("train_steps", "validation", "train_setup")
PHASES = ("sampler", "storage", "ask", "tell", "report_prune", "cost", "build", "measure_S", "device_lock",
          "reward_resolve", *TRAINING, "evaluate", "candidate", "run_trial", "find_duplicate", "record", "budget",
          "progress", "data_load", "unattributed")


class Clock:
    """Exclusive wall time per phase, attributed to the current window (setup or a trial)."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [phase, time spent in wrapped children]
        self.window = "setup"
        self.window_start = time.perf_counter()
        self.windows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.walls: dict[str, float] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.order: list[str] = []
        self.tallies: dict[str, list[Any]] = {}

    def new_window(self, name: str) -> None:
        now = time.perf_counter()
        self.walls[self.window] = self.walls.get(self.window, 0.0) + now - self.window_start
        if self.window not in self.order:
            self.order.append(self.window)
        self.window, self.window_start = name, now

    def wrap(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        clock = self

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if clock.stack and clock.stack[-1][0] == phase:  # recursion within one phase
                return fn(*args, **kwargs)
            clock.calls[phase] += 1
            frame = [phase, 0.0]
            clock.stack.append(frame)
            window = clock.window
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                clock.stack.pop()
                # a window boundary inside the call (budget check) charges it to the old window
                clock.windows[window][phase] += elapsed - frame[1]
                if clock.stack:
                    clock.stack[-1][1] += elapsed
        return wrapper

    def tally(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        """Count calls and inclusive seconds of ``fn`` under ``name`` (inside trial windows only)."""
        clock = self

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if clock.window.startswith("trial"):
                    entry = clock.tallies.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - start
        return wrapper

    def wrap_context(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        """A context-manager factory whose __enter__ (the lock wait) is timed as ``phase``."""
        clock = self

        @functools.wraps(fn)
        @contextlib.contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            cm = fn(*args, **kwargs)
            value = clock.wrap(cm.__enter__, phase)()
            try:
                yield value
            except BaseException:
                if not cm.__exit__(*sys.exc_info()):
                    raise
            else:
                cm.__exit__(None, None, None)
        return wrapper


def instrument(clock: Clock) -> None:
    """Wrap the functions of every phase (module globals, class attributes)."""
    import optuna
    from optuna.storages import RDBStorage, _CachedStorage
    from optuna.trial import Trial

    import nas.builder
    import nas.controllers
    import nas.cost
    import nas.data
    import nas.evaluate
    import nas.measure
    import nas.search
    import nas.train

    def patch(owner: Any, name: str, phase: str) -> None:
        setattr(owner, name, clock.wrap(getattr(owner, name), phase))

    # storage: every public method of both layers; per RDBStorage method also calls and
    # inclusive seconds (which calls the SQLite time goes to)
    for cls in (RDBStorage, _CachedStorage):
        for name, value in list(vars(cls).items()):
            if callable(value) and (not name.startswith("_") or name == "__init__"):
                if cls is RDBStorage:
                    value = clock.tally(value, name)
                setattr(cls, name, clock.wrap(value, "storage"))
    patch(optuna.Study, "ask", "ask")
    patch(optuna.Study, "tell", "tell")
    patch(Trial, "report", "report_prune")
    patch(Trial, "should_prune", "report_prune")

    # the sampler: wrap the methods of the instance make_sampler returns
    make_sampler = nas.controllers.make_sampler

    def timed_make_sampler(*args: Any, **kwargs: Any) -> Any:
        sampler = make_sampler(*args, **kwargs)
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
                     "after_trial"):
            setattr(sampler, name, clock.wrap(getattr(sampler, name), "sampler"))
        return sampler
    nas.controllers.make_sampler = timed_make_sampler

    # cost and build: model_cost is lru-cached; build_model is imported at call time
    nas.evaluate.model_cost = clock.wrap(nas.evaluate.model_cost, "cost")
    nas.cost.model_cost = nas.evaluate.model_cost
    nas.builder.build_model = clock.wrap(nas.builder.build_model, "build")
    nas.evaluate.measure_arch = clock.wrap(nas.evaluate.measure_arch, "measure_S")
    nas.evaluate.resolve_reward = clock.wrap(nas.evaluate.resolve_reward, "reward_resolve")
    nas.measure.exclusive_device = clock.wrap_context(nas.measure.exclusive_device, "device_lock")
    nas.evaluate.shared_device = clock.wrap_context(nas.evaluate.shared_device, "device_lock")

    # training
    nas.evaluate.train = clock.wrap(nas.evaluate.train, "train_setup")
    patch(nas.train._Run, "train_one_epoch", "train_steps")
    patch(nas.train._Run, "evaluate", "validation")

    # the glue
    nas.evaluate.evaluate = clock.wrap(nas.evaluate.evaluate, "evaluate")
    patch(nas.search.Candidate, "evaluate", "candidate")
    nas.search.run_trial = clock.wrap(nas.search.run_trial, "run_trial")
    nas.search.find_duplicate = clock.wrap(nas.search.find_duplicate, "find_duplicate")
    nas.search.record = clock.wrap(nas.search.record, "record")
    patch(nas.search.Progress, "__call__", "progress")
    nas.data.load_dataset = clock.wrap(nas.data.load_dataset, "data_load")

    # window boundaries: each budget check before an ask opens the next trial's window
    budget_left = clock.wrap(nas.search.budget_left, "budget")
    count = [0]

    def windowed_budget_left(*args: Any, **kwargs: Any) -> int:
        clock.new_window(f"trial{count[0]}")
        count[0] += 1
        return budget_left(*args, **kwargs)
    nas.search.budget_left = windowed_budget_left


def ledger_figures(run_dir: Path) -> list[dict[str, Any]]:
    from nas.study import RunDir

    study = RunDir(run_dir).load_study()
    rows = []
    previous_end = None
    for t in study.get_trials(deepcopy=False):
        start, end = t.datetime_start, t.datetime_complete
        wall = (end - start).total_seconds() if start and end else None
        seconds = t.user_attrs.get("seconds")
        rows.append({
            "number": t.number, "state": t.state.name, "baseline": bool(t.user_attrs.get("baseline")),
            "duplicate_of": t.user_attrs.get("duplicate_of"), "arch": t.user_attrs.get("arch"),
            "trial_wall": wall, "evaluate_seconds": seconds,
            "outside_evaluate": None if wall is None or seconds is None else wall - seconds,
            "gap_before": None if previous_end is None or start is None else (start - previous_end).total_seconds(),
            "step_time": t.user_attrs.get("step_time"), "params": t.user_attrs.get("params"),
        })
        previous_end = end
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: the experiment's)")
    parser.add_argument("--override", nargs="*", default=[], help="more key=value experiment overrides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--cache-dir", default=None, help="step-time cache folder (default: a fresh empty one)")
    parser.add_argument("--shared-locks", action="store_true",
                        help="use the system-wide device lock files (wait for other processes' training) "
                             "instead of private ones")
    parser.add_argument("--run-dir", default=None, help="run directory (default: a temporary one, deleted)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_overhead.json")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="nas-overhead-")
    work = Path(tmp.name)
    os.environ["NAS_CACHE_DIR"] = args.cache_dir or str(work / "cache")
    if not args.shared_locks:
        # Device locks live in tempfile.gettempdir(): a private one keeps other people's
        # searches on this host from holding up (or being held up by) our measurements.
        (work / "locks").mkdir()
        os.environ["TMPDIR"] = str(work / "locks")
        tempfile.tempdir = None  # re-read TMPDIR
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    import optuna

    from nas.experiment import load_experiment
    from nas.search import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = [f"trials={args.trials}", "workers=1", "backend=local", *args.override]
    if args.epochs is not None:
        overrides.append(f"proxy.epochs={args.epochs}")
    experiment = load_experiment(args.experiment, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else work / "run"

    clock = Clock()
    instrument(clock)
    load_before = os.getloadavg()
    clock.window_start = time.perf_counter()
    started = clock.window_start
    run_search(experiment, run_dir, fresh=True)
    clock.new_window("end")
    total = time.perf_counter() - started
    load_after = os.getloadavg()

    trials = [w for w in clock.order if w.startswith("trial")]
    ledger = ledger_figures(run_dir)
    if len(trials) > len(ledger):  # the last budget check opens a window with no trial
        trials = trials[: len(ledger)]
    per_trial = []
    for name, row in zip(trials, ledger):
        phases = dict(clock.windows[name])
        phases["unattributed"] = clock.walls[name] - sum(phases.values())
        per_trial.append({"window": name, "wall": clock.walls[name], "phases": phases, **row})
    tail = [w for w in clock.order if w.startswith("trial")][len(trials):]
    setup_phases = dict(clock.windows["setup"])
    setup_phases["unattributed"] = clock.walls["setup"] - sum(setup_phases.values())

    n = len(per_trial)
    trial_wall = sum(t["wall"] for t in per_trial)
    phase_rows = {}
    for phase in PHASES:
        seconds = [t["phases"].get(phase, 0.0) for t in per_trial]
        phase_rows[phase] = {"mean_seconds": statistics.fmean(seconds) if seconds else 0.0,
                             "fraction_of_trial_wall": sum(seconds) / trial_wall if trial_wall else 0.0,
                             "setup_seconds": setup_phases.get(phase, 0.0), "calls": clock.calls.get(phase, 0)}
    training = sum(phase_rows[p]["mean_seconds"] for p in TRAINING)
    overhead = trial_wall / n - training if n else 0.0
    trained = [t for t in per_trial if t["phases"].get("train_steps")]
    summary = {
        "trials": n, "trained_trials": len(trained), "total_seconds": total,
        "setup_seconds": clock.walls["setup"], "trial_wall_mean": trial_wall / n if n else 0.0,
        "training_mean": training, "overhead_mean": overhead,
        "overhead_fraction": overhead / (trial_wall / n) if n else 0.0,
        "overhead_fraction_with_setup": ((overhead * n + clock.walls["setup"]) / (trial_wall + clock.walls["setup"])
                                         if n else 0.0),
        "trained_only": _trained_summary(trained),
    }
    _print(phase_rows, per_trial, summary, setup_phases)
    top = sorted(clock.tallies.items(), key=lambda kv: -kv[1][1])[:6]
    if top and n:
        print("\nstorage (RDBStorage) during trials, per trial: " + ", ".join(
            f"{k} {c / n:.1f} calls {t / n:.3f} s" for k, (c, t) in top))

    payload = {
        "benchmark": "search_overhead", "experiment": args.experiment, "overrides": overrides,
        "threads": args.threads, "private_device_locks": not args.shared_locks,
        "step_time_cache": "fresh (empty)" if args.cache_dir is None else args.cache_dir,
        "summary": summary, "phases": phase_rows, "setup_phases": setup_phases,
        "storage_calls_during_trials": {k: {"calls": c, "seconds": round(t, 4)} for k, (c, t) in
                                        sorted(clock.tallies.items(), key=lambda kv: -kv[1][1])},
        "per_trial": per_trial, "windows_after_last_trial": {w: clock.walls.get(w) for w in tail},
        "host": {"python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__,
                 "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nsaved {args.out}")
    if args.run_dir is None:
        tmp.cleanup()
    return 0


def _trained_summary(trained: list[dict[str, Any]]) -> dict[str, Any]:
    if not trained:
        return {}
    wall = statistics.fmean(t["wall"] for t in trained)
    training = statistics.fmean(sum(t["phases"].get(p, 0.0) for p in TRAINING) for t in trained)
    measure = statistics.fmean(t["phases"].get("measure_S", 0.0) + t["phases"].get("build", 0.0) for t in trained)
    return {"count": len(trained), "wall_mean": wall, "training_mean": training,
            "overhead_fraction": (wall - training) / wall, "measure_and_build_mean": measure}


def _print(phase_rows: dict[str, dict[str, float]], per_trial: list[dict[str, Any]], summary: dict[str, Any],
           setup: dict[str, float]) -> None:
    print(f"\n{summary['trials']} trials ({summary['trained_trials']} trained), mean trial wall "
          f"{summary['trial_wall_mean']:.2f} s; setup {summary['setup_seconds']:.2f} s; total "
          f"{summary['total_seconds']:.1f} s\n")
    print(f"{'phase':<16} {'s/trial':>9} {'% of trial':>10} {'setup s':>9} {'calls':>7}")
    print("-" * 55)
    for phase, row in phase_rows.items():
        if row["calls"] == 0 and row["mean_seconds"] == 0 and phase != "unattributed":
            continue
        print(f"{phase:<16} {row['mean_seconds']:>9.3f} {100 * row['fraction_of_trial_wall']:>9.1f}% "
              f"{row['setup_seconds']:>9.3f} {row['calls']:>7}")
    print("-" * 55)
    print(f"{'training':<16} {summary['training_mean']:>9.3f} "
          f"{100 * (1 - summary['overhead_fraction']):>9.1f}%   (train_steps + validation + train_setup)")
    print(f"{'overhead':<16} {summary['overhead_mean']:>9.3f} {100 * summary['overhead_fraction']:>9.1f}%   "
          f"(everything else; {100 * summary['overhead_fraction_with_setup']:.1f}% with setup amortized)")
    t = summary["trained_only"]
    if t:
        print(f"trained trials only: wall {t['wall_mean']:.2f} s, training {t['training_mean']:.2f} s, overhead "
              f"{100 * t['overhead_fraction']:.1f}% (measure_S + build {t['measure_and_build_mean']:.2f} s)")
    print("\nper trial (ledger: trial wall = datetime_complete - datetime_start, eval = user_attr seconds):")
    print(f"{'#':>3} {'state':<9} {'kind':<10} {'window s':>9} {'ledger s':>9} {'eval s':>8} {'train s':>8} "
          f"{'measure s':>9} {'sampler s':>9} {'storage s':>9} {'gap s':>7}")
    for t in per_trial:
        kind = "baseline" if t["baseline"] else (f"dup of {t['duplicate_of']}" if t["duplicate_of"] is not None
                                                 else "new")
        ph = t["phases"]
        train_s = sum(ph.get(p, 0.0) for p in TRAINING)
        print(f"{t['number']:>3} {t['state']:<9} {kind:<10} {t['wall']:>9.2f} {_f(t['trial_wall'], 9)} "
              f"{_f(t['evaluate_seconds'], 8)} {train_s:>8.2f} "
              f"{ph.get('measure_S', 0.0) + ph.get('build', 0.0):>9.2f} "
              f"{ph.get('sampler', 0.0):>9.3f} {ph.get('storage', 0.0):>9.3f} {_f(t['gap_before'], 7)}")


def _f(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


if __name__ == "__main__":
    sys.exit(main())
