"""Data tools: ``nas data prepare``."""
from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data tools: `nas data prepare SRC OUT.npz --resolution R`")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("prepare", help="decode an image folder once into a uint8 .npz at the proxy resolution")
    q.add_argument("src", help="image folder: train/<class>/*.jpg (and optionally val/<class>/)")
    q.add_argument("out", help="the .npz to write (use with --dataset npz --data-dir OUT)")
    q.add_argument("--resolution", type=int, required=True)
    q.set_defaults(handler=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from nas.data import prepare_imagefolder

    out = prepare_imagefolder(args.src, args.out, resolution=args.resolution)
    print(f"{out}: decoded {args.src} at {args.resolution}x{args.resolution}")
    return 0
