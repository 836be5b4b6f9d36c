"""Helpers shared by the command modules: reading ARCH, printing JSON and tables."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Sequence

__all__ = ["resolve_arch", "default_resolution", "print_json", "format_table", "cell", "epoch_progress"]


def resolve_arch(text: str):
    """ARCH on the command line: a baseline name, an arch string, or a file holding one."""
    from nas.baselines import resolve_arch as resolve

    return resolve(text)


def default_resolution(text: str) -> int:
    from nas.baselines import baseline_info, baseline_names

    return baseline_info(text).eval_resolution if text in baseline_names() else 224


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and rows for i in range(len(headers))]
    lines = []
    for r, row in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def epoch_progress(epochs: int, what: str = "val accuracy") -> Callable[[int, float], None]:
    """A line per epoch on stderr: long trainings must never look hung."""
    def show(epoch: int, accuracy: float) -> None:
        print(f"  epoch {epoch}/{epochs}: {what} {accuracy:.4f}", file=sys.stderr, flush=True)
    return show
