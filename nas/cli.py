"""The ``nas`` command line. Configuration is read here, validated, and passed down as arguments.

User mistakes (bad YAML, a bad arch string, missing data) end in one line on stderr and a
non-zero exit; set ``NAS_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["main", "resolve_arch"]

# OpenMP threads spin only briefly before sleeping (libgomp's default spins far longer): on a
# small, shared CPU, long-spinning threads of neighbouring processes slow training and S
# several-fold, while a short spin keeps an idle machine's speed (OMP_WAIT_POLICY=PASSIVE
# costs ~1.8x there). Must be set before torch loads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn
    return register


# -- shared helpers ------------------------------------------------------------------------
def resolve_arch(text: str):
    """ARCH on the command line: a baseline name, an arch string, or a file holding one."""
    from nas.arch import parse_arch
    from nas.baselines import baseline, baseline_names

    if text in baseline_names():
        return baseline(text)
    if len(text.split()) == 1:
        if Path(text).is_file():
            return parse_arch(Path(text).read_text(encoding="utf-8"))
        if text.startswith("efficientnet"):
            return baseline(text)  # raises: unknown baseline, listing the names
    return parse_arch(text)


def default_resolution(text: str) -> int:
    from nas.baselines import baseline_info, baseline_names

    return baseline_info(text).eval_resolution if text in baseline_names() else 224


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and rows for i in range(len(headers))]
    lines = []
    for r, row in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


# -- architectures -------------------------------------------------------------------------
@command("show")
def cmd_show(args: argparse.Namespace) -> int:
    from nas.arch import BLOCK_NAMES
    from nas.cost import model_cost

    arch = resolve_arch(args.arch)
    resolution = args.resolution or default_resolution(args.arch)
    cost = model_cost(arch, resolution, args.num_classes)
    if args.json:
        print_json({"arch": str(arch), "params": cost.params, "macs": cost.macs, "resolution": resolution,
                    "num_classes": args.num_classes, "depth": arch.depth,
                    "stages": [{"arch": str(s), "params": p, "macs": m}
                               for s, p, m in zip(arch.stages, cost.stage_params, cost.stage_macs)]})
        return 0
    rows = [[i, BLOCK_NAMES[s.block], s.repeats, s.kernel, s.stride, s.expansion, s.channels, s.se or None,
             p, m / 1e6] for i, (s, p, m) in enumerate(zip(arch.stages, cost.stage_params, cost.stage_macs), 1)]
    print(arch)
    print(format_table(rows, ["stage", "block", "layers", "kernel", "stride", "exp", "channels", "se", "params", "MMACs"]))
    print(f"params {cost.params:,}  MACs {cost.macs / 1e9:.4f} G at {resolution}x{resolution}, "
          f"{args.num_classes} classes, {arch.depth} blocks")
    return 0


@command("baselines")
def cmd_baselines(args: argparse.Namespace) -> int:
    from nas.baselines import baseline_info, baseline_names
    from nas.cost import model_cost

    rows = []
    for name in baseline_names():
        b = baseline_info(name)
        cost = model_cost(b.arch, b.eval_resolution)
        rows.append({"name": name, "family": b.family, "params": cost.params, "macs": cost.macs,
                     "train_resolution": b.train_resolution, "eval_resolution": b.eval_resolution,
                     "resolution": b.eval_resolution, "width": b.width, "depth": b.depth, "arch": str(b.arch)})
    if args.json:
        print_json(rows)
    else:
        print(format_table([[r["name"], r["params"], r["macs"] / 1e9, r["train_resolution"], r["eval_resolution"]]
                            for r in rows], ["baseline", "params", "GMACs", "train res", "eval res"]))
    return 0


@command("space")
def cmd_space(args: argparse.Namespace) -> int:
    from nas.baselines import baseline, baseline_names
    from nas.spaces import load_space

    space = load_space(args.space)
    if args.contains:
        reason = space.mismatch(resolve_arch(args.contains))
        if reason:
            print(f"not in space {space.name}: {reason}", file=sys.stderr)
            return 1
        print(f"in space {space.name}")
        return 0
    members = [n for n in baseline_names() if space.contains(baseline(n))]
    if space.baseline and space.baseline not in members:
        members.insert(0, space.baseline)
    info = {"name": space.name, "description": space.description, "size": space.size,
            "baseline": space.baseline, "members": members, "stages": len(space.stages),
            "decisions": [{"name": d.name, "choices": list(d.choices)} for d in space.decisions]}
    if args.json:
        print_json(info)
        return 0
    print(f"{space.name}: {space.description}")
    print(f"size {space.size:,} architectures; baseline {space.baseline}; members: {', '.join(members) or '-'}")
    rows = []
    for st in space.stages:
        c = st.choices()
        se = ", ".join(f"{b}:{r:g}" for b, r in st.se_by_block) if st.se_by_block else c["se"]
        rows.append([st.index, c["block"], c["kernel"], c["expansion"], c["layers"], c["channels"], st.stride, se])
    fmt = [[r[0], *(_choices(v) for v in r[1:])] for r in rows]
    print(format_table(fmt, ["stage", "block", "kernel", "expansion", "layers", "channels", "stride", "se"]))
    return 0


def _choices(v: Any) -> str:
    if isinstance(v, tuple):
        return v[0] if len(v) == 1 else "{" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + "}"
    return str(v)


# -- one candidate ---------------------------------------------------------------------------
@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from nas.data import load_dataset
    from nas.evaluate import default_cache, evaluate
    from nas.reward import reward_preset
    from nas.train import ProxyConfig

    arch = resolve_arch(args.arch)
    reference = resolve_arch(args.reference) if args.reference else None
    overrides = {k: v for k, v in (("batch_size", args.batch), ("lr", args.lr), ("optimizer", args.optimizer)) if v is not None}
    proxy = ProxyConfig(epochs=args.epochs, resolution=args.resolution, seed=args.seed, **overrides)
    data = load_dataset(args.dataset, data_dir=args.data_dir, download=args.download, seed=0,
                        resolution=args.resolution if args.dataset in ("imagefolder", "synthetic") else None)
    cache = None if args.no_cache else default_cache()
    device = None if args.device == "auto" else args.device
    progress = None if args.json or not sys.stderr.isatty() else _epoch_progress(args.epochs)
    result = evaluate(arch, data, proxy, reward_preset("efficientnetv2"), reference=reference, device=device,
                      cache=cache, on_epoch=progress)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.arch)
        for key in ("state", "reason", "accuracy", "step_time", "params", "macs", "reward", "device"):
            value = getattr(result, key)
            if value is not None:
                print(f"  {key:10s} {_cell(value)}")
    return 0 if result.state == "COMPLETE" or args.json else 1


def _epoch_progress(epochs: int) -> Callable[[int, float], None]:
    def show(epoch: int, accuracy: float) -> None:
        bar = "#" * epoch + "." * (epochs - epoch)
        print(f"\r[{bar}] epoch {epoch}/{epochs}  val accuracy {accuracy:.4f}", end="\n" if epoch == epochs else "",
              file=sys.stderr, flush=True)
    return show


@command("measure")
def cmd_measure(args: argparse.Namespace) -> int:
    from nas.evaluate import default_cache, measure_arch
    from nas.train import ProxyConfig

    arch = resolve_arch(args.arch)
    proxy = ProxyConfig(batch_size=args.batch, resolution=args.resolution, dtype=args.dtype)
    device = None if args.device == "auto" else args.device
    step = measure_arch(arch, num_classes=args.num_classes, proxy=proxy, device=device,
                        cache=None if args.no_cache else default_cache())
    data = {"arch": str(arch), **step.to_dict()}
    if args.json:
        print_json(data)
    else:
        print(f"{arch}\n  step time {step.step_time * 1e3:.2f} ms (p10 {step.step_time_p10 * 1e3:.2f}, "
              f"p90 {step.step_time_p90 * 1e3:.2f}) at batch {args.batch}, {args.resolution}px\n  device {step.device}"
              f"{'  (cached)' if step.cached else ''}")
    return 0


@command("data")
def cmd_data(args: argparse.Namespace) -> int:
    from nas.data import prepare_imagefolder

    out = prepare_imagefolder(args.src, args.out, resolution=args.resolution)
    print(f"{out}: decoded {args.src} at {args.resolution}x{args.resolution}")
    return 0


# -- searches -----------------------------------------------------------------------------------
@command("search")
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


@command("trials")
def cmd_trials(args: argparse.Namespace) -> int:
    from nas.study import LEDGER_FIELDS, RunDir, ledger

    rows = ledger(RunDir(args.run).load_study())
    if args.json:
        print_json(rows)
        return 0
    print(format_table([[r[k] for k in LEDGER_FIELDS if k != "macs"] for r in rows],
                       [k for k in LEDGER_FIELDS if k != "macs"]))
    return 0


@command("pareto")
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


@command("compare")
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


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from nas.report import write_report

    out = write_report(args.run, args.out, top_k=args.top)
    print(f"wrote {out}")
    return 0


@command("export")
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


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from nas.builder import build_model
    from nas.cost import model_cost
    from nas.data import load_dataset
    from nas.export import save_state_dict
    from nas.train import CandidateFailure, ProxyConfig, train

    arch, dataset = _train_arch(args)
    overrides = {k: v for k, v in (("batch_size", args.batch), ("lr", args.lr), ("optimizer", args.optimizer))
                 if v is not None}
    config = ProxyConfig(epochs=args.epochs, resolution=args.resolution, seed=args.seed, **overrides)
    data = load_dataset(dataset, data_dir=args.data_dir, download=args.download, seed=0, split="final",
                        resolution=args.resolution if dataset in ("imagefolder", "synthetic") else None)
    torch.manual_seed(args.seed)
    model = build_model(arch, num_classes=data.num_classes)
    progress = None if args.json or not sys.stderr.isatty() else _epoch_progress(args.epochs)
    try:
        result = train(model, data, config, device=None if args.device == "auto" else args.device,
                       on_epoch=progress)
    except CandidateFailure as failure:
        print(f"nas train: {arch}: {failure.reason}", file=sys.stderr)
        return 1
    cost = model_cost(arch, args.resolution, data.num_classes)
    if args.out:
        save_state_dict(model, args.out, arch=str(arch), num_classes=data.num_classes, resolution=args.resolution,
                        trained=True, dataset=dataset, split="final", epochs=args.epochs,
                        accuracy=result.accuracy)
    info = {"arch": str(arch), "dataset": dataset, "split": "final", "epochs": args.epochs,
            "resolution": args.resolution, "accuracy": result.accuracy,
            "epoch_accuracies": list(result.epoch_accuracies), "params": cost.params, "macs": cost.macs,
            "train_seconds": result.train_seconds, "images_per_second": result.images_per_second,
            "out": str(args.out) if args.out else None}
    if args.json:
        print_json(info)
    else:
        print(arch)
        print(f"  test accuracy {result.accuracy:.4f} after {args.epochs} epochs at {args.resolution}px on {dataset} "
              f"(trained on all training data), {result.train_seconds:.1f} s")
        print(f"  params {cost.params:,}  MACs {cost.macs / 1e6:.2f} M" + (f"\n  saved {args.out}" if args.out else ""))
    return 0


def _train_arch(args: argparse.Namespace):
    """ARCH for ``nas train``: an arch, a baseline, a file, or a run directory (its ``--trial``)."""
    from nas.study import RunDir

    if Path(args.arch).is_dir() and RunDir(args.arch).exists():
        from nas.arch import parse_arch
        from nas.export import find_trial

        row = find_trial(args.arch, args.trial)
        return parse_arch(row["arch"]), args.dataset or RunDir(args.arch).read_config().get("dataset", "digits")
    return resolve_arch(args.arch), args.dataset or "digits"


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Hardware-aware architecture search over EfficientNet-style networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("show", help="an architecture: per-stage table, params, MACs")
    p.add_argument("arch", help="a baseline name, an arch string or a file holding one")
    p.add_argument("--resolution", type=int, help="input resolution (default: a baseline's eval resolution, else 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("baselines", help="every baseline with params, MACs and resolutions")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("space", help="a search space: size, decisions, member baselines")
    p.add_argument("space", help="a shipped space name or a YAML file")
    p.add_argument("--contains", metavar="ARCH", help="exit 0 if ARCH is in the space, else 1 saying why")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help="train and score one candidate (A, S, P, reward)")
    p.add_argument("arch")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch the data set (checksummed) if missing")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "rmsprop"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", metavar="ARCH", help="S0/P0 from this arch (default: the arch itself, reward = A)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true", help="measure S again even if cached")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("measure", help="S: the training-step time of an arch on this device")
    p.add_argument("arch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("data", help="data tools: `nas data prepare SRC OUT.npz --resolution R`")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("prepare", help="decode an image folder once into a uint8 .npz at the proxy resolution")
    q.add_argument("src", help="image folder: train/<class>/*.jpg (and optionally val/<class>/)")
    q.add_argument("out", help="the .npz to write (use with --dataset npz --data-dir OUT)")
    q.add_argument("--resolution", type=int, required=True)

    p = sub.add_parser("search", help="run (or resume) an architecture search")
    p.add_argument("experiment", help="an experiment YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override experiment fields (trials=50, proxy.epochs=2)")
    p.add_argument("--run-dir", help="default: runs/<name>")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")

    p = sub.add_parser("trials", help="the ledger of a run")
    p.add_argument("run", help="a run directory")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("pareto", help="the Pareto front of a run's COMPLETE trials")
    p.add_argument("run")
    p.add_argument("--objectives", help="comma-separated, default accuracy,step_time,params")
    p.add_argument("--csv", metavar="F")
    p.add_argument("--plot", metavar="F", help="PNG or SVG")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("compare", help="several runs (e.g. controllers) on one plot and table")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--objectives", help="comma-separated, default accuracy,step_time,params")
    p.add_argument("--out", metavar="F", help="a plot: PNG or SVG")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="a self-contained HTML report of a run")
    p.add_argument("run")
    p.add_argument("--out", required=True, metavar="F.html")
    p.add_argument("--top", type=int, default=10, help="how many best trials to list (default 10)")

    p = sub.add_parser("export", help="export a trial's network: ONNX, TorchScript or a state_dict file")
    p.add_argument("run")
    p.add_argument("--trial", default="best", help="a trial number or 'best' (highest reward, default)")
    p.add_argument("--format", choices=["onnx", "torchscript", "state_dict"])
    p.add_argument("--out", required=True, metavar="F")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train one network longer, on all training data (the step after a search)")
    p.add_argument("arch", help="a baseline name, an arch string, a file holding one, or a run directory")
    p.add_argument("--trial", default="best", help="with a run directory: a trial number or 'best' (default)")
    p.add_argument("--dataset", help="default: the run's, else digits")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch the data set (checksummed) if missing")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "rmsprop"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", metavar="F.pt", help="save the trained network as a state_dict export")
    p.add_argument("--json", action="store_true")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, LookupError, ImportError) as err:
        if os.environ.get("NAS_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"nas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
