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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, LookupError) as err:
        if os.environ.get("NAS_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"nas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
