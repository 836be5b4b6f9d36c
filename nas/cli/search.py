"""Searches: ``nas search``."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from nas.cli._common import format_table

__all__ = ["register"]

_TOP = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run (or resume) an architecture search")
    p.add_argument("experiment", help="an experiment YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override experiment fields (trials=50, proxy.epochs=2)")
    p.add_argument("--run-dir", help="default: runs/<name>")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming (deletes the run's study)")
    p.add_argument("--no-cache", action="store_true", help="measure S again instead of reusing cached step times")
    p.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    from nas.experiment import load_experiment
    from nas.runtime import RuntimeOptions, stop_on_sigterm
    from nas.search import run_search

    stop_on_sigterm()
    experiment = load_experiment(args.experiment, args.overrides)
    runtime = RuntimeOptions.from_environment()
    if args.no_cache:
        runtime = dataclasses.replace(runtime, use_cache=False)
    run = run_search(experiment, args.run_dir, fresh=args.fresh, runtime=runtime)
    _print_summary(run.path, experiment.reward.objectives()[0][0])
    return 0


def _print_summary(run_dir: Path, key: str) -> None:
    """The top trials, the best against the baseline, and what to run next."""
    from nas.study import RunDir, ledger

    rows = ledger(RunDir(run_dir).load_study())
    done = [r for r in rows if r["state"] == "COMPLETE" and r.get(key) is not None and r["duplicate_of"] is None]
    states = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"{run_dir}: {len(rows)} trials ({', '.join(f'{v} {k}' for k, v in states.items())})")
    if not done:
        print("no trial completed; see `nas trials " + shlex.quote(str(run_dir)) + "` for the reasons")
        return
    top = sorted(done, key=lambda r: -r[key])[:_TOP]
    base = next((r for r in done if r["baseline"]), None)
    shown = top + ([base] if base is not None and base not in top else [])
    print(f"top {len(top)} of {len(done)} evaluated architectures by {key} (* = the baseline):")
    table = [[r["number"], ("* " if r["baseline"] else "") + str(r["arch"]), r["accuracy"], r["step_time"] * 1e3,
              r["params"], r[key]] for r in shown]
    print(format_table(table, ["trial", "arch", "accuracy", "S (ms)", "params", key]))
    best = top[0]
    print(f"best: trial {best['number']}, {key} {best[key]:.4f} ({_figures(best)})")
    if base is not None and base is not best:
        print(f"  vs the baseline, trial {base['number']}: {key} {base[key]:.4f} ({_figures(base)}); "
              f"{best[key] / base[key]:.3f}x the {key}, {best['step_time'] / base['step_time']:.2f}x the step time, "
              f"{best['params'] / base['params']:.2f}x the params")
    elif base is best:
        print("  the baseline is the best so far")
    run = shlex.quote(str(run_dir))
    print("next:")
    print(f"  nas report {run} --out report.html       # plots, the Pareto front, the baseline against the best")
    print(f"  nas pareto {run} --plot front.png        # the front as a table and a plot")
    print(f"  nas train {run} --trial best --epochs 30 --out best.pt   # train the best one longer")


def _figures(row: dict[str, Any]) -> str:
    return f"accuracy {row['accuracy']:.4f}, S {row['step_time'] * 1e3:.2f} ms, {row['params']:,} params"
