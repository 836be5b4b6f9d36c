"""Result analysis: the study as a DataFrame, Pareto fronts (more arrives with the report)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.pareto import DEFAULT_OBJECTIVES, OBJECTIVE_DIRECTIONS, pareto_front

__all__ = ["trials_frame", "pareto_table"]


def trials_frame(run: str | Path) -> pd.DataFrame:
    """One row per trial with the ledger fields (``nas trials RUN --json`` as a DataFrame)."""
    from nas.study import RunDir, ledger

    return pd.DataFrame(ledger(RunDir(run).load_study()))


def pareto_table(run: str | Path, objectives: Sequence[str] | None = None) -> pd.DataFrame:
    """The non-dominated COMPLETE trials (the baseline included), by default accuracy↑ step_time↓ params↓."""
    df = trials_frame(run)
    if df.empty:
        return df
    names = list(objectives) if objectives else list(DEFAULT_OBJECTIVES)
    for name in names:
        if name not in OBJECTIVE_DIRECTIONS:
            raise ValueError(f"unknown objective {name!r} (choose from {', '.join(OBJECTIVE_DIRECTIONS)})")
    done = df[df["state"] == "COMPLETE"].dropna(subset=names)
    return pareto_front(done, {n: OBJECTIVE_DIRECTIONS[n] for n in names}).reset_index(drop=True)
