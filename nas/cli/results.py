"""What a search found: ``trials``, ``pareto``, ``compare``, ``report``, ``export``, ``fidelity``."""
from __future__ import annotations

import argparse
import json

from nas.cli._common import format_table, print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trials", help="the ledger of a run")
    p.add_argument("run", help="a run directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_trials)

    p = sub.add_parser("pareto", help="the Pareto front of a run's COMPLETE trials")
    p.add_argument("run")
    p.add_argument("--objectives", help="comma-separated, default accuracy,step_time,params")
    p.add_argument("--csv", metavar="F")
    p.add_argument("--plot", metavar="F", help="PNG or SVG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_pareto)

    p = sub.add_parser("compare", help="several runs (e.g. controllers) on one plot and table")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--objectives", help="comma-separated, default accuracy,step_time,params")
    p.add_argument("--out", metavar="F", help="a plot: PNG or SVG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("report", help="a self-contained HTML report of a run")
    p.add_argument("run")
    p.add_argument("--out", required=True, metavar="F.html")
    p.add_argument("--top", type=int, default=10, help="how many best trials to list (default 10)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("export", help="export a trial's network: ONNX, TorchScript or a state_dict file")
    p.add_argument("run", help="a run directory, or a state_dict file written by nas train --out")
    p.add_argument("--trial", default="best", help="a trial number or 'best' (highest reward, default)")
    p.add_argument("--untrained", action="store_true",
                   help="export the initial weights when the run kept no trained ones (keep_weights: false)")
    p.add_argument("--format", choices=["onnx", "torchscript", "state_dict"])
    p.add_argument("--out", required=True, metavar="F")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("fidelity", help="retrain the best and some random trials longer: does the proxy rank "
                                        "them as longer training does?")
    p.add_argument("run")
    p.add_argument("--top", type=int, required=True, metavar="K", help="retrain the K best trials (by reward; by "
                                                                        "accuracy for a multi-objective run)")
    p.add_argument("--random", type=int, required=True, metavar="M", help="and M other trials drawn at random")
    p.add_argument("--epochs", type=int, required=True, metavar="E", help="epochs of the long training")
    p.add_argument("--resolution", type=int, metavar="R", help="image size of the long training (default: the "
                                                               "proxy's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_fidelity)


def cmd_trials(args: argparse.Namespace) -> int:
    from nas.study import RunDir, ledger

    rows = ledger(RunDir(args.run).load_study())
    if args.json:
        print_json(rows)  # JSON keeps seconds (the ledger's unit); text tables say ms
        return 0
    columns = ["number", "state", "arch", "accuracy", "S (ms)", "params", "reward", "reason", "duplicate_of"]
    print(format_table([[r["number"], r["state"], r["arch"], r["accuracy"], _ms(r["step_time"]), r["params"],
                         r["reward"], r["reason"], r["duplicate_of"]] for r in rows], columns))
    return 0


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def cmd_pareto(args: argparse.Namespace) -> int:
    import sys

    from nas.analysis import pareto_table

    objectives = args.objectives.split(",") if args.objectives else None
    front = pareto_table(args.run, objectives=objectives)
    if args.csv:
        front.to_csv(args.csv, index=False)
        print(f"wrote {args.csv} ({len(front)} trials on the front)", file=sys.stderr if args.json else sys.stdout)
    if args.plot:
        from nas.plots import plot_front

        plot_front(args.run, args.plot, objectives=objectives)
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(front.to_json(orient="records", indent=2))
    elif not (args.csv or args.plot):
        cols = [c for c in ("number", "arch", "accuracy", "step_time", "params", "macs", "reward") if c in front]
        rows = [[_ms(v) if c == "step_time" else v for c, v in zip(cols, row)] for row in front[cols].values.tolist()]
        print(format_table(rows, ["S (ms)" if c == "step_time" else c for c in cols]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nas.analysis import compare_runs

    objectives = args.objectives.split(",") if args.objectives else None
    table = compare_runs(args.runs, objectives=objectives)
    if args.out:
        from nas.plots import plot_compare

        plot_compare(args.runs, args.out)
    if args.json:
        print_json({"objectives": table.attrs["objectives"], "reference": table.attrs["reference"],
                    "runs": json.loads(table.to_json(orient="records"))})
        return 0
    cols = ["run", "controller", "trials", "complete", "best_reward", "best_trial", "front_size", "hypervolume"]
    print(format_table([[None if v != v else v for v in row] for row in table[cols].values.tolist()], cols))
    ref = ", ".join(f"{n} {v * 1e3:.4g} ms" if n == "step_time" else f"{n} {v:.4g}"
                    for n, v in zip(table.attrs["objectives"], table.attrs["reference"]))
    print(f"hypervolume: the share of the box between the ideal point and the reference ({ref}) that a run's "
          f"front over {', '.join(table.attrs['objectives'])} dominates; larger is better")
    devices = {d for run_devices in table["devices"] for d in run_devices}
    if len(devices) > 1:
        by_run = "; ".join(f"{r}: {', '.join(d) or '-'}" for r, d in zip(table["run"], table["devices"]))
        print(f"warning: the runs measured S on different devices ({by_run}): their step times do not compare")
    if args.out:
        print(f"plot: {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.report import write_report

    out = write_report(args.run, args.out, top_k=args.top)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.export import export_file, export_trial

    fmt = args.format or ("onnx" if str(args.out).lower().endswith(".onnx") else None)
    if fmt is None:
        raise ValueError(f"{args.out}: give --format (onnx, torchscript or state_dict)")
    if Path(args.run).is_file():  # a trained network from `nas train --out`
        path, facts = export_file(args.run, fmt, args.out)
        if args.json:
            print_json({"path": str(path), "format": fmt, **facts})
        else:
            print(f"exported {args.run} as {fmt} to {path}\n  {facts['arch']}")
        return 0
    result = export_trial(args.run, args.trial, fmt, args.out, untrained=args.untrained)
    w = result.weights
    if args.json:
        print_json(result.to_dict())
    else:
        what = "trained proxy weights" if w.trained else f"untrained initial weights ({w.source})"
        print(f"exported trial {w.number} ({what}) as {fmt} to {result.path}\n  {w.arch}\n"
              f"  input (N, 3, {w.resolution}, {w.resolution}), {w.num_classes} classes")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from nas.fidelity import RELIABLE_TAU, check_fidelity

    check = check_fidelity(args.run, top=args.top, random_count=args.random, epochs=args.epochs,
                           resolution=args.resolution)
    if check.reliable is False:
        print(f"warning: Kendall's tau {check.agreement.kendall.estimate:.2f} < {RELIABLE_TAU}: the proxy does not "
              "rank these networks reliably", file=sys.stderr)
    if args.json:
        print_json(check.to_dict())
        return 0
    rows = [[t.number, t.chosen, t.proxy_accuracy, t.long_accuracy, t.arch] for t in check.trials]
    print(format_table(rows, ["trial", "chosen", "proxy acc", "long acc", "arch"]))
    print(check.summary())
    return 0
