"""Bookkeeping of a search against its size: is the work around each trial flat up to 10,000 trials?

Runs the real search code (``prepare``, the ledger, the controllers, the study in SQLite or
PostgreSQL) on the simulated backend, whose evaluations are instant, so what is timed is
everything around a trial: asking the controller, dedup and the budget, the study's
transactions, progress. For each storage and controller it reports:

- bookkeeping ms per trial over a window of trials ending at each size (100, 1,000,
  10,000: trials 50-100, 900-1,000, 9,900-10,000), and the ratio of the last to the
  1,000-trial figure;
- the controller's own time per trial (``infer_relative_search_space``,
  ``sample_relative``, ``sample_independent``, ``before_trial``, ``after_trial``) in the
  same windows;
- a fresh worker joining the finished study (a new process: imports, opening the study,
  folding every trial, its first proposal), seconds;
- 8 simulated workers on PostgreSQL: the budget exactly met and nothing evaluated twice.

    python benchmarks/search_scale.py                                   # 10,000 trials, all
    python benchmarks/search_scale.py --trials 1000 --controllers random evolution --storages sqlite

Prints a table and writes ``benchmarks/results/search_scale.json``. PostgreSQL is a
private server started here on 127.0.0.1 (Debian's binaries), or ``--postgres URL``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests

import optuna  # noqa: E402

from nas.experiment import load_experiment  # noqa: E402
from nas.run import Run  # noqa: E402
from nas.runtime import RuntimeOptions  # noqa: E402

QUICK = ROOT / "experiments" / "quickstart.yaml"
SIZES = (100, 1000, 10000)
_SAMPLER_METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
                    "after_trial")


class _Timed(optuna.samplers.BaseSampler):
    """A sampler that adds up the time spent in the one it wraps."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler, self.seconds = sampler, 0.0

    def _call(self, name: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(self.sampler, name)(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def infer_relative_search_space(self, study, trial):
        return self._call("infer_relative_search_space", study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._call("sample_relative", study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self._call("sample_independent", study, trial, name, distribution)

    def before_trial(self, study, trial):
        return self._call("before_trial", study, trial)

    def after_trial(self, study, trial, state, values):
        return self._call("after_trial", study, trial, state, values)


class _TimedRun(Run):
    """A run whose ledgers' controllers are timed."""

    def ledger(self, *, worker_index: int = 0):
        ledger = super().ledger(worker_index=worker_index)
        ledger.study.sampler = _Timed(ledger.study.sampler)
        _TIMERS.append(ledger.study.sampler)
        return ledger


_TIMERS: list[_Timed] = []


def _experiment(trials: int, controller: str, storage: str | None, workers: int = 1, name: str = "scale"):
    overrides = ["backend=simulated", f"controller={controller}", f"trials={trials}", "seed=0", f"name={name}",
                 f"simulated.workers={workers}"]
    if storage:
        overrides.append(f"storage={storage}")
    return load_experiment(QUICK, overrides)


def time_search(trials: int, controller: str, storage: str | None, run_dir: Path) -> dict[str, Any]:
    """Run one simulated search; the wall and controller time at each finished trial."""
    from nas.backends.simulated import SimulatedBackend
    from nas.search import prepare

    _TIMERS.clear()
    run = _TimedRun(_experiment(trials, controller, storage), run_dir, RuntimeOptions(cache_dir=run_dir / "cache"))
    marks: list[tuple[int, float, float]] = []  # (trials counted, wall, controller seconds)
    start = time.perf_counter()

    def progress(ledger) -> None:
        if ledger.take_finished():
            marks.append((ledger.counted(), time.perf_counter() - start, sum(t.seconds for t in _TIMERS)))

    backend = SimulatedBackend()
    backend.check(run)
    with prepare(run, fresh=True, log=lambda m: None):
        backend.run(run, progress, lambda m: None)
    return {"marks": marks, "total_seconds": time.perf_counter() - start}


def windows(marks: list[tuple[int, float, float]], trials: int) -> dict[int, dict[str, float]]:
    """ms per trial (all bookkeeping, and the controller's share) over the window ending at each size."""
    out = {}
    for size in SIZES:
        if size > trials:
            break
        low = size // 2 if size == 100 else size - size // 10
        inside = [m for m in marks if low <= m[0] <= size]
        if len(inside) < 2:
            continue
        (n0, w0, c0), (n1, w1, c1) = inside[0], inside[-1]
        out[size] = {"bookkeeping_ms": 1e3 * (w1 - w0) / (n1 - n0), "controller_ms": 1e3 * (c1 - c0) / (n1 - n0)}
    return out


def fresh_worker(trials: int, controller: str, storage: str | None, run_dir: Path) -> float:
    """Seconds for a new process to join the study and propose its first candidate."""
    code = f"""
import time; start = time.perf_counter()
from pathlib import Path
from nas.experiment import load_experiment
from nas.run import Run
from nas.runtime import RuntimeOptions
overrides = ["backend=simulated", "controller={controller}", "trials={trials + 1}", "seed=0", "name=scale"]
{'overrides.append("storage=' + storage + '")' if storage else ''}
run = Run(load_experiment("{QUICK}", overrides), Path("{run_dir}"), RuntimeOptions(cache_dir=Path("{run_dir}") / "cache"))
ledger = run.ledger()
proposal = ledger.ask()
assert proposal is not None and proposal.number >= {trials}
print(time.perf_counter() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-1000:])
    return float(out.stdout.strip().splitlines()[-1])


def parallel_check(storage: str, run_dir: Path, trials: int) -> dict[str, Any]:
    """8 simulated workers on one study: exactly the budget, nothing evaluated twice."""
    from nas.search import run_search
    from nas.study import RunDir, ledger

    exp = _experiment(trials, "evolution", storage, workers=8, name="parallel")
    run_search(exp, run_dir, fresh=True, runtime=RuntimeOptions(cache_dir=run_dir / "cache"), log=lambda m: None)
    rows = ledger(RunDir(run_dir).load_study())
    evaluated = [r["arch"] for r in rows if r["duplicate_of"] is None
                 and (r["state"] in ("COMPLETE", "PRUNED") or str(r["reason"]).startswith(("diverged", "oom", "invalid")))]
    return {"trials": len(rows), "evaluated": len(evaluated), "distinct": len(set(evaluated)), "budget": trials,
            "open": sum(r["state"] in ("RUNNING", "WAITING") for r in rows),
            "exact": len(evaluated) == len(set(evaluated)) == trials}


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    from pg import postgres_server

    try:
        with postgres_server("nas_scale") as started:
            yield started
    except BaseException as err:  # pytest's skip: no server binaries here
        if type(err).__name__ != "Skipped":
            raise
        print(f"PostgreSQL skipped: {err}", file=sys.stderr)
        yield None


def _reset(url: str) -> None:
    """Drop the studies a previous run left, so every run starts from an empty database."""
    from nas.storage import open_storage

    storage = open_storage(url)
    for name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--controllers", nargs="+", default=["random", "evolution", "reinforce", "tpe", "nsga2"])
    parser.add_argument("--max-trials", nargs="*", default=["tpe=3000", "nsga2=3000"], metavar="NAME=N",
                        help="a smaller budget for controllers whose own ask grows with the study (Optuna's)")
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: start a private server on 127.0.0.1)")
    parser.add_argument("--parallel-trials", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_scale.json"))
    args = parser.parse_args(argv)
    caps = {k: int(v) for k, v in (item.split("=") for item in args.max_trials)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {"trials": args.trials, "runs": []}
    with tempfile.TemporaryDirectory(prefix="nas-scale-") as tmp, postgres(
            args.postgres if "postgresql" in args.storages else "") as pg_url:
        for storage_name in args.storages:
            url = None if storage_name == "sqlite" else pg_url
            if storage_name == "postgresql" and url is None:
                continue
            for controller in args.controllers:
                trials = min(args.trials, caps.get(controller, args.trials))
                run_dir = Path(tmp) / f"{storage_name}-{controller}"
                if url:
                    _reset(url)
                timed = time_search(trials, controller, url, run_dir)
                entry = {"storage": storage_name, "controller": controller, "trials": trials,
                         "total_seconds": round(timed["total_seconds"], 1),
                         "windows": windows(timed["marks"], trials),
                         "fresh_worker_seconds": round(fresh_worker(trials, controller, url, run_dir), 2)}
                sizes = entry["windows"]
                if 1000 in sizes and trials in sizes and trials != 1000:
                    entry["growth"] = sizes[trials]["bookkeeping_ms"] / sizes[1000]["bookkeeping_ms"]
                results["runs"].append(entry)
                _print_row(entry)
        if pg_url and "postgresql" in args.storages:
            _reset(pg_url)
            results["parallel_postgresql"] = parallel_check(pg_url, Path(tmp) / "parallel", args.parallel_trials)
            print("8 simulated workers on PostgreSQL:", results["parallel_postgresql"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


def _print_row(entry: dict[str, Any]) -> None:
    cells = [f"{entry['storage']:10s} {entry['controller']:10s}"]
    for size, figures in entry["windows"].items():
        cells.append(f"@{size}: {figures['bookkeeping_ms']:6.1f} ms ({figures['controller_ms']:5.1f} controller)")
    growth = f"  x{entry['growth']:.2f} vs 1,000" if "growth" in entry else ""
    print("  ".join(cells) + growth + f"  fresh worker {entry['fresh_worker_seconds']} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
