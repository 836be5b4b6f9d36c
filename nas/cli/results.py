"""What a search found: ``trials``, ``pareto``, ``compare``, ``report``, ``export``."""
from __future__ import annotations

import argparse
import json
import sys

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
    p.add_argument("run")
    p.add_argument("--trial", default="best", help="a trial number or 'best' (highest reward, default)")
    p.add_argument("--format", choices=["onnx", "torchscript", "state_dict"])
    p.add_argument("--out", required=True, metavar="F")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_export)


def cmd_trials(args: argparse.Namespace) -> int:
    from nas.study import LEDGER_FIELDS, RunDir, ledger

    rows = ledger(RunDir(args.run).load_study())
    if args.json:
        print_json(rows)
        return 0
    print(format_table([[r[k] for k in LEDGER_FIELDS if k != "macs"] for r in rows],
                       [k for k in LEDGER_FIELDS if k != "macs"]))
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from nas.analysis import pareto_table

    front = pareto_table(args.run, objectives=args.objectives.split(",") if args.objectives else None)
    if args.csv:
        front.to_csv(args.csv, index=False)
    if args.plot:
        from nas.plots import plot_front

        plot_front(args.run, args.plot, objectives=args.objectives.split(",") if args.objectives else None)
    if args.json:
        print(front.to_json(orient="records", indent=2))
    elif not (args.csv or args.plot):
        cols = [c for c in ("number", "arch", "accuracy", "step_time", "params", "macs", "reward") if c in front]
        print(format_table(front[cols].values.tolist(), cols))
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
    ref = ", ".join(f"{n} {v:.4g}" for n, v in zip(table.attrs["objectives"], table.attrs["reference"]))
    print(f"front over {', '.join(table.attrs['objectives'])}; hypervolume reference: {ref}")
    if args.out:
        print(f"plot: {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.report import write_report

    out = write_report(args.run, args.out, top_k=args.top)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nas.export import export_trial

    fmt = args.format or ("onnx" if str(args.out).lower().endswith(".onnx") else None)
    if fmt is None:
        raise ValueError(f"{args.out}: give --format (onnx, torchscript or state_dict)")
    result = export_trial(args.run, args.trial, fmt, args.out)
    w = result.weights
    if not w.trained:
        print(f"note: run {args.run} kept no weights for trial {w.number} (keep_weights: false, or it did not "
              f"finish training); exporting the untrained weights initialised from its {w.source}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        what = "trained proxy weights" if w.trained else f"initial weights ({w.source})"
        print(f"exported trial {w.number} ({what}) as {fmt} to {result.path}\n  {w.arch}\n"
              f"  input (N, 3, {w.resolution}, {w.resolution}), {w.num_classes} classes")
    return 0
