"""Architecture commands: ``show``, ``baselines``, ``space``."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from nas.cli._common import default_resolution, format_table, print_json, resolve_arch

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="an architecture: per-stage table, params, MACs")
    p.add_argument("arch", help="a baseline name, an arch string or a file holding one")
    p.add_argument("--resolution", type=int, help="input resolution (default: a baseline's eval resolution, else 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("baselines", help="every baseline with params, MACs and resolutions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_baselines)

    p = sub.add_parser("space", help="a search space: size, decisions, member baselines")
    p.add_argument("space", help="a shipped space name or a YAML file")
    p.add_argument("--contains", metavar="ARCH", help="exit 0 if ARCH is in the space, else 1 saying why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_space)


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
