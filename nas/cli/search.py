"""Searches: ``nas search``."""
from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli._common import format_table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run (or resume) an architecture search")
    p.add_argument("experiment", help="an experiment YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override experiment fields (trials=50, proxy.epochs=2)")
    p.add_argument("--run-dir", help="default: runs/<name>")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from nas.experiment import load_experiment
    from nas.search import run_search

    experiment = load_experiment(args.experiment, args.overrides)
    run = run_search(experiment, args.run_dir, fresh=args.fresh)
    _print_summary(run.run_dir.path)
    return 0


def _print_summary(run_dir: Path) -> None:
    from nas.study import RunDir, ledger

    rows = ledger(RunDir(run_dir).load_study())
    done = [r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None]
    top = sorted(done, key=lambda r: -r["reward"])[:5]
    base = [r for r in done if r["baseline"] and r not in top]
    table = [[r["number"], ("* " if r["baseline"] else "") + str(r["arch"]), r["accuracy"], r["step_time"] * 1e3,
              r["params"], r["reward"]] for r in top + base]
    states = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"{run_dir}: {len(rows)} trials ({', '.join(f'{v} {k}' for k, v in states.items())}); * = baseline")
    print(format_table(table, ["trial", "arch", "accuracy", "S (ms)", "params", "reward"]))
