"""The ``nas`` command line. Configuration is read here, validated, and passed down as arguments.

One module per group of commands (``arch``, ``candidate``, ``data``, ``search``,
``results``); each adds its sub-commands to the parser with ``register(sub)`` and binds a
handler. User mistakes (bad YAML, a bad arch string, missing data) end in one line on
stderr and a non-zero exit; set ``NAS_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]

# OpenMP threads spin only briefly before sleeping (libgomp's default spins far longer): on a
# small, shared CPU, long-spinning threads of neighbouring processes slow training and S
# several-fold, while a short spin keeps an idle machine's speed (OMP_WAIT_POLICY=PASSIVE
# costs ~1.8x there). Must be set before torch loads.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def build_parser() -> argparse.ArgumentParser:
    from nas.cli import arch, candidate, data, estimate, results, search

    parser = argparse.ArgumentParser(prog="nas", description="Hardware-aware architecture search over "
                                                             "EfficientNet-style networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (arch, candidate, data, search, estimate, results):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # the reader went away (`nas show ... | head`): stop quietly, as other tools do
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, LookupError, ImportError) as err:
        if os.environ.get("NAS_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"nas {args.command}: error: {message}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
