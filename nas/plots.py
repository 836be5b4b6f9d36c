"""Figures of a search: the Pareto front, progress per controller, choices of the best, EDFs.

matplotlib's object API only (``Figure``, no pyplot): no global backend or state, so
plotting works headless and from threads. Each ``*_figure`` function returns a Figure;
each ``plot_*`` function saves one to a path whose suffix picks the format (``.png``,
``.svg``, ``.pdf``). Needs the ``plots`` extra: ``pip install 'nas[plots]'``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nas import analysis
from nas.pareto import OBJECTIVE_DIRECTIONS, pareto_mask

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nas.fidelity import FidelityCheck

__all__ = [
    "choices_figure",
    "compare_figure",
    "edf_figure",
    "fidelity_figure",
    "front_figure",
    "plot_choices",
    "plot_compare",
    "plot_edfs",
    "plot_front",
    "plot_progress",
    "progress_figure",
    "save_figure",
]

FORMATS = (".png", ".svg", ".pdf")
# name -> (axis label, scale applied to the values for display)
_AXES = {
    "accuracy": ("accuracy", 1.0),
    "reward": ("reward", 1.0),
    "step_time": ("step time S (ms)", 1e3),
    "params": ("parameters P (thousands)", 1e-3),
    "macs": ("MACs (millions)", 1e-6),
}
_BASE_STYLE = {"marker": "*", "s": 260, "color": "#d62728", "edgecolor": "black", "linewidths": 0.8, "zorder": 5}


def _figure(width: float, height: float) -> "Figure":
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'nas[plots]'") from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """Save ``fig`` in the format its suffix names (``.png``, ``.svg`` or ``.pdf``)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: unknown plot format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _label(name: str) -> str:
    return _AXES.get(name, (name, 1.0))[0]


def _scale(name: str) -> float:
    return _AXES.get(name, (name, 1.0))[1]


def _run_label(frame: pd.DataFrame, fallback: str) -> str:
    config = frame.attrs.get("config") or {}
    controller = config.get("controller")
    controller = controller.get("name") if isinstance(controller, dict) else controller
    name = config.get("name") or frame.attrs.get("study") or fallback
    run = frame.attrs.get("run")
    where = Path(run).name if run else ""
    label = where if where and where != name else name
    return f"{label} ({controller})" if controller else str(label)


# -- the front ------------------------------------------------------------------------------------
def _pairs(names: list[str]) -> list[tuple[str, str]]:
    """(x, y) projections: the score on y against each cost, else every pair."""
    scores = [n for n in names if OBJECTIVE_DIRECTIONS.get(n) == "maximize"]
    costs = [n for n in names if n not in scores]
    if len(names) == 1:
        return [("number", names[0])]
    if scores and costs:
        return [(c, s) for s in scores for c in costs]
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def _iso_reward(spec: Any, base: pd.Series | None, x_name: str, y_name: str) -> Any:
    """A function x -> accuracy of constant reward R along the x cost (the other costs at the reference)."""
    if y_name != "accuracy" or spec is None:
        return None
    if spec.kind == "efficientnetv2" and base is not None:
        s0 = spec.step_time_ref or float(base["step_time"])
        p0 = spec.params_ref or float(base["params"])
        if x_name == "step_time":
            return lambda x, r: r * (x / s0) ** (-spec.w)
        if x_name == "params":
            return lambda x, r: r * (x / p0) ** (-spec.v)
    if spec.kind == "efficientnet" and x_name == "macs":
        target = spec.target or 400e6
        return lambda x, r: r * (x / target) ** (-spec.w)
    return None


def _draw_front_panel(ax: "Axes", done: pd.DataFrame, on_front: np.ndarray, x_name: str, y_name: str,
                      base: pd.Series | None, spec: Any, levels: Sequence[tuple[str, float]]) -> None:
    xs, ys = _scale(x_name), _scale(y_name)
    x = done[x_name].to_numpy(dtype=float) * xs
    y = done[y_name].to_numpy(dtype=float) * ys
    ax.scatter(x[~on_front], y[~on_front], s=22, color="#9aa5b1", alpha=0.8, label="dominated", zorder=2)
    ax.scatter(x[on_front], y[on_front], s=42, color="#1f77b4", edgecolor="black", linewidths=0.5,
               label="Pareto front (all objectives)", zorder=3)
    if len(done) and x_name != "number":
        # The 2-D front of this projection as a staircase.
        flags = [OBJECTIVE_DIRECTIONS.get(x_name) == "maximize", OBJECTIVE_DIRECTIONS.get(y_name) == "maximize"]
        mask = pareto_mask(np.column_stack([x, y]), flags)
        order = np.argsort(x[mask], kind="stable")
        ax.step(x[mask][order], y[mask][order], where="post", color="#1f77b4", lw=1.2, alpha=0.7, zorder=2)
    if base is not None and x_name in base and pd.notna(base[x_name]):
        ax.scatter([float(base[x_name]) * xs], [float(base[y_name]) * ys], label="baseline", **_BASE_STYLE)
    iso = _iso_reward(spec, base, x_name, y_name)
    if iso is not None and len(done):
        lo, hi = np.nanmin(x), np.nanmax(x)
        pad = (hi - lo) * 0.08 or hi * 0.1 or 1.0
        grid = np.linspace(max(lo - pad, 1e-12 * xs), hi + pad, 200)
        ymin, ymax = ax.get_ylim()
        for i, (what, level) in enumerate(levels):
            curve = iso(grid / xs, level)
            ax.plot(grid, curve, ls="--", lw=1.0, color="#ff7f0e" if what == "baseline" else "#2ca02c",
                    alpha=0.9, label=f"reward = {level:.3f} ({what})", zorder=1)
        ax.set_ylim(ymin, ymax)
    ax.set_xlabel(_label(x_name) if x_name != "number" else "trial")
    ax.set_ylabel(_label(y_name))
    ax.grid(True, alpha=0.3)


def front_figure(data: analysis.Data, objectives: analysis.Objectives = None) -> "Figure":
    """The front in 2-D projections: score against each cost, baseline starred, reward iso-lines.

    Points on the front over *all* the objectives are blue; the staircase is the front of
    each projection. Dashed lines hold the reward constant (at the baseline's and the
    best trial's reward) with the other cost at the reference.
    """
    frame = analysis.trials_frame(data)
    objs = analysis._objectives(objectives)
    names = list(objs)
    done = analysis.complete_trials(frame).dropna(subset=names)
    on_front = pareto_mask(analysis._points(done, objs), [d == "maximize" for d in objs.values()]) \
        if len(done) else np.zeros(0, dtype=bool)
    base = analysis._baseline_row(frame)
    try:
        spec = analysis._reward_spec(frame, None)
    except (ValueError, TypeError):
        spec = None
    levels: list[tuple[str, float]] = []
    if base is not None and pd.notna(base.get("reward")):
        levels.append(("baseline", float(base["reward"])))
    if done["reward"].notna().any():
        best = float(done["reward"].max())
        if not levels or not math.isclose(best, levels[0][1]):
            levels.append(("best", best))
    pairs = _pairs(names)
    fig = _figure(4.6 * len(pairs) + 0.4, 4.0)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (x_name, y_name) in zip(axes, pairs):
        _draw_front_panel(ax, done, on_front, x_name, y_name, base, spec, levels)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if labels:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize=8, frameon=False)
    title = _run_label(frame, "run")
    fig.suptitle(f"{title}: {len(done)} distinct COMPLETE trials, {int(on_front.sum())} on the front "
                 f"({', '.join(names)})", fontsize=10)
    return fig


def plot_front(run: analysis.Data, path: str | Path, objectives: analysis.Objectives = None) -> Path:
    """Save :func:`front_figure` (``nas pareto RUN --plot F``)."""
    return save_figure(front_figure(run, objectives), path)


# -- progress --------------------------------------------------------------------------------------
def _draw_progress(ax: "Axes", frames: Sequence[pd.DataFrame], labels: Sequence[str], by: str) -> None:
    colors = [f"C{i % 10}" for i in range(len(frames))]
    for frame, label, color in zip(frames, labels, colors):
        curve = analysis.best_so_far(frame, by)
        if curve.empty:
            continue
        ax.scatter(curve["number"], curve[by], s=12, color=color, alpha=0.35, zorder=2)
        ax.step(curve["number"], curve["best"], where="post", color=color, lw=1.8, label=label, zorder=3)
        base = analysis._baseline_row(frame)
        if base is not None and pd.notna(base.get(by)):
            # the bar every search is judged against: the space's baseline under the same proxy
            ax.axhline(float(base[by]), color=color, ls=":", lw=1.2, zorder=1)
            ax.scatter([base["number"]], [base[by]], label=f"{label}: baseline" if len(frames) > 1 else "baseline",
                       **{**_BASE_STYLE, "s": 120, "color": color})
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {_label(by)} so far")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8)


def progress_figure(runs: Sequence[analysis.Data], labels: Sequence[str] | None = None,
                    by: str = "reward") -> "Figure":
    """Best ``by`` (default reward) against trial number, one line per run (dots: each trial)."""
    frames = [analysis.trials_frame(r) for r in runs]
    labels = list(labels) if labels else [_run_label(f, f"run {i + 1}") for i, f in enumerate(frames)]
    fig = _figure(6.4, 4.0)
    _draw_progress(fig.subplots(), frames, labels, by)
    return fig


def plot_progress(runs: Sequence[analysis.Data], path: str | Path, labels: Sequence[str] | None = None,
                  by: str = "reward") -> Path:
    """Save :func:`progress_figure`."""
    return save_figure(progress_figure(runs, labels, by), path)


# -- per-stage choices of the best ---------------------------------------------------------------------
def choices_figure(data: analysis.Data, k: int = 10, by: str = "reward") -> "Figure":
    """Heat maps, one per field (block, kernel, expansion, depth...): stages x choices, the share of the top k."""
    frame = analysis.trials_frame(data)
    stats = analysis.decision_stats(frame, k, by)
    stats = stats[stats["stage"].notna()]
    n = len(analysis.top_trials(frame, k, by)) if frame[by].notna().any() else 0
    fields = list(dict.fromkeys(stats["field"]))
    fig = _figure(max(3.2 * max(len(fields), 1), 4.0), 3.4)
    if not fields:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no per-stage decisions with COMPLETE trials", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    image = None
    for ax, field in zip(axes, fields):
        part = stats[stats["field"] == field]
        stages = sorted(int(s) for s in part["stage"].unique())
        choices = sorted(part["choice"].unique(), key=analysis._sort_key)
        grid = np.full((len(stages), len(choices)), np.nan)
        for _, row in part.iterrows():
            grid[stages.index(int(row["stage"])), choices.index(row["choice"])] = row["top_share"]
        image = ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(choices)), [_short(c) for c in choices], fontsize=8)
        ax.set_yticks(range(len(stages)), [f"stage {s}" for s in stages], fontsize=8)
        ax.set_title(field, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label=f"share of the top {n}")
    return fig


def _short(choice: Any) -> str:
    if isinstance(choice, float):
        return f"{choice:g}"
    return {"fused_mbconv": "fused", "mbconv": "mb"}.get(choice, str(choice))


def plot_choices(data: analysis.Data, path: str | Path, k: int = 10, by: str = "reward") -> Path:
    """Save :func:`choices_figure`."""
    return save_figure(choices_figure(data, k, by), path)


# -- EDFs ---------------------------------------------------------------------------------------------------
def edf_figure(data: analysis.Data, decisions: Sequence[str] | None = None, columns: int = 4) -> "Figure":
    """pycls-style error EDFs: per decision, one curve per choice (the fraction of models with error <= x)."""
    edfs = analysis.error_edfs(data, decisions)
    names = [n for n, groups in edfs.items() if groups]
    columns = max(1, min(columns, len(names) or 1))
    rows = max(1, math.ceil(len(names) / columns))
    fig = _figure(3.3 * columns, 2.6 * rows + 0.3)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    values = [x for name in names for x, _ in edfs[name].values()]
    lo = min(float(x[0]) for x in values) if values else 0.0
    hi = max(float(x[-1]) for x in values) if values else 1.0
    pad = (hi - lo) * 0.05 or 0.01
    for ax, name in zip(axes, names):
        for i, (choice, (x, f)) in enumerate(edfs[name].items()):
            # from F = 0 left of every model to F = 1 right of every model, on one x range
            xs = np.concatenate(([lo - pad], x, [hi + pad]))
            fs = np.concatenate(([0.0], f, [1.0]))
            ax.step(xs, fs, where="post", color=f"C{i % 10}", lw=1.5,
                    label=f"{_short(choice)} (n={_count(f)})")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if not names:
        axes[0].text(0.5, 0.5, "no COMPLETE trials", ha="center", va="center")
    fig.supxlabel("error (1 - accuracy)", fontsize=9)
    fig.supylabel("cumulative fraction of models", fontsize=9)
    return fig


def _count(f: np.ndarray) -> int:
    # F steps by multiples of 1/n: the smallest step gives n back exactly enough to show.
    steps = np.diff(np.concatenate(([0.0], f)))
    return int(round(1.0 / steps.min())) if len(steps) and steps.min() > 0 else 0


def plot_edfs(data: analysis.Data, path: str | Path, decisions: Sequence[str] | None = None) -> Path:
    """Save :func:`edf_figure`."""
    return save_figure(edf_figure(data, decisions), path)


# -- several runs -----------------------------------------------------------------------------------------
def compare_figure(runs: Sequence[analysis.Data], labels: Sequence[str] | None = None,
                   x: str = "step_time", y: str = "accuracy") -> "Figure":
    """Runs side by side: best reward per trial number, and each run's trials and 2-D front (``y`` vs ``x``)."""
    frames = [analysis.trials_frame(r) for r in runs]
    labels = list(labels) if labels else [_run_label(f, f"run {i + 1}") for i, f in enumerate(frames)]
    fig = _figure(11.0, 4.2)
    left, right = fig.subplots(1, 2)
    _draw_progress(left, frames, labels, "reward")
    flags = [OBJECTIVE_DIRECTIONS.get(x) == "maximize", OBJECTIVE_DIRECTIONS.get(y) == "maximize"]
    for i, (frame, label) in enumerate(zip(frames, labels)):
        done = analysis.complete_trials(frame).dropna(subset=[x, y])
        if done.empty:
            continue
        px = done[x].to_numpy(dtype=float) * _scale(x)
        py = done[y].to_numpy(dtype=float) * _scale(y)
        right.scatter(px, py, s=16, color=f"C{i % 10}", alpha=0.45)
        mask = pareto_mask(np.column_stack([px, py]), flags)
        order = np.argsort(px[mask], kind="stable")
        right.step(px[mask][order], py[mask][order], where="post", color=f"C{i % 10}", lw=1.8, label=label)
        right.scatter(px[mask], py[mask], s=40, color=f"C{i % 10}", edgecolor="black", linewidths=0.6, zorder=3)
        base = analysis._baseline_row(frame)
        if base is not None:
            right.scatter([float(base[x]) * _scale(x)], [float(base[y]) * _scale(y)],
                          **{**_BASE_STYLE, "s": 160, "color": f"C{i % 10}"})
    right.set_xlabel(_label(x))
    right.set_ylabel(_label(y))
    right.set_title("each run's front (outlined; star: its baseline)", fontsize=9)
    right.grid(True, alpha=0.3)
    if right.get_legend_handles_labels()[1]:
        right.legend(fontsize=8)
    return fig


def plot_compare(runs: Sequence[analysis.Data], path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Save :func:`compare_figure` (``nas compare RUN... --out F``)."""
    return save_figure(compare_figure(runs, labels), path)


# -- fidelity ---------------------------------------------------------------------------------------
def fidelity_figure(check: "FidelityCheck") -> "Figure":
    """Proxy accuracy against long accuracy of the retrained trials (``nas fidelity``).

    The top-K by the search's ranking are blue, the random others grey; each point is
    labelled with its trial number. A proxy that ranks well puts the points on a rising
    line (the scales differ: longer training lifts every accuracy).
    """
    fig = _figure(5.2, 4.2)
    ax = fig.subplots()
    ranked = [t for t in check.trials if t.long_accuracy is not None]
    for chosen, color, label in (("top", "#1f77b4", f"top {check.top} of the search"),
                                 ("random", "#9aa5b1", "drawn at random")):
        group = [t for t in ranked if t.chosen == chosen]
        if group:
            ax.scatter([t.proxy_accuracy for t in group], [t.long_accuracy for t in group], s=46, color=color,
                       edgecolor="black", linewidths=0.5, label=label, zorder=3)
    for t in ranked:
        ax.annotate(str(t.number), (t.proxy_accuracy, t.long_accuracy), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xlabel("proxy accuracy (the search)")
    ax.set_ylabel(f"long accuracy ({check.epochs} epochs at {check.resolution} px)")
    ax.grid(True, alpha=0.3)
    if ranked:
        ax.legend(fontsize=8, loc="lower right")
    a = check.agreement
    if a is not None:
        tau, rho = (f"{c.estimate:.2f}" if c.estimate == c.estimate else "undefined" for c in (a.kendall, a.spearman))
        ax.set_title(f"{a.n} trials: Kendall tau {tau}, Spearman rho {rho}", fontsize=10)
    return fig
