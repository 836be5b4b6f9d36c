"""Architecture commands: ``show``, ``scale``, ``baselines``, ``space``."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from nas.cli._common import default_resolution, format_table, print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="an architecture: per-stage table, params, MACs")
    p.add_argument("arch", help="a baseline name, an arch string or a file holding one")
    p.add_argument("--resolution", type=int, help="input resolution (default: a baseline's eval resolution, else 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("scale", help="compound-scale an architecture (EfficientNet's phi, or explicit multipliers)",
                       description="Scale ARCH by --phi N (depth alpha^N, width beta^N, resolution gamma^N times "
                                   "the base resolution, to a multiple of 8) or by --width/--depth multipliers and "
                                   "a --resolution in pixels (each defaults to no change). Depth rounds up per stage; "
                                   "widths round as the family does (V2 when the arch has a Fused-MBConv stage).")
    p.add_argument("arch", help="a baseline name, an arch string or a file holding one")
    p.add_argument("--phi", type=float, help="compound coefficient (>= 0)")
    p.add_argument("--alpha", type=float, help="depth base of --phi (default 1.2)")
    p.add_argument("--beta", type=float, help="width base of --phi (default 1.1)")
    p.add_argument("--gamma", type=float, help="resolution base of --phi (default 1.15)")
    p.add_argument("--width", type=float, help="width multiplier")
    p.add_argument("--depth", type=float, help="depth multiplier")
    p.add_argument("--resolution", type=int, help="the scaled network's resolution, pixels")
    p.add_argument("--base-resolution", type=int,
                   help="ARCH's own resolution, which --phi scales (default: a baseline's eval resolution, else 224)")
    p.add_argument("--max-resolution", type=int, help="cap on the resolution (EfficientNetV2 uses 480)")
    p.add_argument("--family", choices=("efficientnet", "efficientnetv2"),
                   help="width rounding: V1's 10%% rule or V2's nearest multiple of 8 (default: from the arch)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs for params and MACs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_scale)

    p = sub.add_parser("baselines", help="every baseline with params, MACs and resolutions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_baselines)

    p = sub.add_parser("space", help="a search space: size, decisions, member baselines")
    p.add_argument("space", nargs="?", help="a shipped space name or a YAML file (none: list the shipped spaces)")
    p.add_argument("--contains", metavar="ARCH", help="exit 0 if ARCH is in the space, else 1 saying why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_space)


def cmd_show(args: argparse.Namespace) -> int:
    from nas.arch import BLOCK_NAMES
    from nas.baselines import resolve_arch
    from nas.cost import model_cost

    resolution = default_resolution(args.arch) if args.resolution is None else _pixels("--resolution", args.resolution)
    _at_least_one("--num-classes", args.num_classes)
    arch = resolve_arch(args.arch)
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


def cmd_scale(args: argparse.Namespace) -> int:
    from nas.baselines import resolve_arch
    from nas.cost import model_cost
    from nas.scaling import scale_arch

    explicit = [f"--{name}" for name in ("width", "depth", "resolution") if getattr(args, name) is not None]
    bases = {name: getattr(args, name) for name in ("alpha", "beta", "gamma") if getattr(args, name) is not None}
    if args.phi is not None and explicit:
        raise ValueError(f"give either --phi or --width/--depth/--resolution, not both (got --phi and "
                         f"{', '.join(explicit)})")
    if args.phi is None and not explicit:
        raise ValueError("give --phi N, or --width W --depth D --resolution R")
    if args.phi is None and bases:
        raise ValueError(f"--{', --'.join(bases)} can only be used with --phi")
    _at_least_one("--num-classes", args.num_classes)
    base_resolution = (default_resolution(args.arch) if args.base_resolution is None
                       else _pixels("--base-resolution", args.base_resolution))
    scaled = scale_arch(resolve_arch(args.arch), phi=args.phi, width=args.width, depth=args.depth,
                        resolution=args.resolution, base_resolution=base_resolution,
                        max_resolution=args.max_resolution, family=args.family, **bases)
    cost = model_cost(scaled.arch, scaled.resolution, args.num_classes)
    if args.json:
        print_json({"arch": str(scaled.arch), "params": cost.params, "macs": cost.macs,
                    "resolution": scaled.resolution, "width": scaled.width, "depth": scaled.depth,
                    "family": scaled.family, "num_classes": args.num_classes, "blocks": scaled.arch.depth})
        return 0
    print(scaled.arch)
    print(f"params {cost.params:,}  MACs {cost.macs / 1e9:.4f} G at {scaled.resolution}x{scaled.resolution}, "
          f"{args.num_classes} classes, {scaled.arch.depth} blocks (width x{scaled.width:.4g}, "
          f"depth x{scaled.depth:.4g}, {scaled.family} rounding)")
    return 0


def _pixels(option: str, value: int) -> int:
    from nas.scaling import MAX_RESOLUTION

    if not 1 <= value <= MAX_RESOLUTION:
        raise ValueError(f"{option} must be in [1, {MAX_RESOLUTION}] pixels, got {value}")
    return value


def _at_least_one(option: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")


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
    from nas.baselines import baseline, baseline_names, resolve_arch
    from nas.spaces import load_space

    if args.space is None:
        if args.contains:
            raise ValueError("--contains needs a SPACE: nas space SPACE --contains ARCH")
        return _list_spaces(args)
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


def _list_spaces(args: argparse.Namespace) -> int:
    from nas.spaces import load_space, shipped_spaces

    spaces = [load_space(name) for name in shipped_spaces()]
    rows = [{"name": s.name, "size": s.size, "baseline": s.baseline, "description": s.description} for s in spaces]
    if args.json:
        print_json(rows)
        return 0
    print(format_table([[r["name"], r["size"], r["baseline"]] for r in rows], ["space", "size", "baseline"]))
    print("nas space NAME shows one; a YAML file path works too.")
    return 0


def _choices(v: Any) -> str:
    if isinstance(v, tuple):
        return v[0] if len(v) == 1 else "{" + ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) + "}"
    return str(v)
