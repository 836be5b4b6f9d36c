"""Result analysis: a finished (or running) search as tables and numbers.

Everything here reads the study (the record of a search, design, decision 1) and never
retrains: the ledger as a DataFrame, Pareto fronts and their later ranks, hypervolume,
the reward recomputed under other constants, the trials that dominate the baseline, what
the best trials chose per stage, error EDFs per design choice and a *rediscovery score*
(how close the best found architectures came to a baseline, stage by stage).

Functions take either a run directory (a path or :class:`~nas.study.RunDir`), an
``optuna.Study`` or a DataFrame from :func:`trials_frame`, so they compose with plain
pandas filtering. The math lives in :mod:`nas.pareto`.

The run's storage also opens in optuna-dashboard::

    optuna-dashboard sqlite:///runs/NAME/study.db
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd

from nas.pareto import DEFAULT_OBJECTIVES, OBJECTIVE_DIRECTIONS, Direction, edf_by, hypervolume
from nas.pareto import non_dominated_ranks, pareto_mask

if TYPE_CHECKING:
    import optuna

    from nas.arch import Arch
    from nas.reward import RewardSpec
    from nas.study import RunDir

__all__ = [
    "REDISCOVERY_FIELDS",
    "Rediscovery",
    "best_so_far",
    "compare_runs",
    "complete_trials",
    "decision_stats",
    "default_reference",
    "dominating_baseline",
    "error_edfs",
    "front_hypervolume",
    "pareto_ranks_table",
    "pareto_table",
    "rediscovery",
    "rediscovery_score",
    "rescore",
    "run_config",
    "run_summary",
    "stage_agreement",
    "stage_choices",
    "top_trials",
    "trials_frame",
]

RunLike = Union[str, Path, "RunDir", "optuna.Study"]
Data = Union[RunLike, pd.DataFrame]
Objectives = Union[Sequence[str], Mapping[str, Direction], None]

#: Per-stage fields the rediscovery score compares (``layers`` is the stage depth).
REDISCOVERY_FIELDS = ("block", "kernel", "expansion", "layers")
_BLOCK_NAMES = {"mb": "mbconv", "fmb": "fused_mbconv"}
_PARAM = "param."
_INT_COLUMNS = ("number", "params", "macs", "duplicate_of", "retry_of", "seed")


# -- the ledger as a DataFrame ------------------------------------------------------------------
def trials_frame(run: RunLike | pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the ledger fields plus ``duration`` (s) and ``error`` (1 - accuracy).

    Columns are those of ``nas trials RUN --json`` (``number``, ``state``, ``arch``,
    ``accuracy``, ``step_time``, ``params``, ``macs``, ``reward``, ``reason``,
    ``duplicate_of``, ``epoch_accuracies`` (a list per trial), ``device``, ``baseline``,
    ``seed``, ...) and one ``param.<decision>`` column per search decision
    (``param.stage3.kernel``). ``frame.attrs["run"]`` and ``frame.attrs["config"]`` hold
    the run directory and its resolved experiment when read from a run directory.

    Args:
        run: A run directory, a :class:`~nas.study.RunDir`, an ``optuna.Study``, or a
            DataFrame (returned as it is).

    Raises:
        FileNotFoundError: ``run`` is not a run directory (one line, no traceback in the CLI).
    """
    import optuna

    from nas.study import RunDir, ledger

    if isinstance(run, pd.DataFrame):
        return run
    config: dict[str, Any] = {}
    path = None
    if isinstance(run, optuna.Study):
        study = run
    else:
        run_dir = run if isinstance(run, RunDir) else RunDir(run)
        config = run_dir.read_config()
        study = run_dir.load_study()
        path = str(run_dir.path)
    rows = ledger(study)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["number", "state", "arch", "accuracy", "step_time", "params", "macs",
                                      "reward", "reason", "duplicate_of", "baseline"])
    start = pd.to_datetime(frame.get("datetime_start"), errors="coerce")
    end = pd.to_datetime(frame.get("datetime_complete"), errors="coerce")
    frame["duration"] = (end - start).dt.total_seconds() if len(frame) else pd.Series(dtype=float)
    frame["error"] = 1.0 - pd.to_numeric(frame["accuracy"], errors="coerce")
    frame["baseline"] = frame["baseline"].fillna(False).astype(bool)
    for column in _INT_COLUMNS:  # counts stay integers next to missing values (CSV, JSON)
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame.attrs.update(run=path, config=config, study=study.study_name)
    return frame


def run_config(data: Data) -> dict[str, Any]:
    """The resolved experiment of a run (``config.yaml``), or ``{}`` when unknown."""
    from nas.study import RunDir

    if isinstance(data, pd.DataFrame):
        return dict(data.attrs.get("config") or {})
    if isinstance(data, (str, Path, RunDir)):
        return (data if isinstance(data, RunDir) else RunDir(data)).read_config()
    return {}


def complete_trials(data: Data, *, include_duplicates: bool = False) -> pd.DataFrame:
    """The COMPLETE trials with every scored field present.

    A duplicate (``duplicate_of`` set) reuses another trial's result for the same
    architecture; it is left out unless ``include_duplicates`` so each architecture
    counts once (the ledger still shows it).
    """
    frame = trials_frame(data)
    done = frame[frame["state"] == "COMPLETE"].dropna(subset=["accuracy", "step_time", "params"])
    if not include_duplicates and "duplicate_of" in done:
        done = done[done["duplicate_of"].isna()]
    return done


def _objectives(objectives: Objectives) -> dict[str, Direction]:
    if objectives is None:
        return dict(DEFAULT_OBJECTIVES)
    if isinstance(objectives, str):
        objectives = [o for o in objectives.split(",") if o]
    if isinstance(objectives, Mapping):
        pairs = dict(objectives)
    else:
        pairs = {}
        for name in objectives:
            if name not in OBJECTIVE_DIRECTIONS:
                raise ValueError(f"unknown objective {name!r} (choose from {', '.join(OBJECTIVE_DIRECTIONS)})")
            pairs[name] = OBJECTIVE_DIRECTIONS[name]
    if not pairs:
        raise ValueError("no objectives given (choose from " + ", ".join(OBJECTIVE_DIRECTIONS) + ")")
    return pairs


def _points(frame: pd.DataFrame, objectives: Mapping[str, Direction]) -> np.ndarray:
    return np.column_stack([frame[n].to_numpy(dtype=float, na_value=np.nan) for n in objectives]) \
        if len(frame) else np.zeros((0, len(objectives)))


# -- Pareto fronts ----------------------------------------------------------------------------------
def pareto_table(data: Data, objectives: Objectives = None, *, include_duplicates: bool = False) -> pd.DataFrame:
    """The non-dominated COMPLETE trials (the baseline included), in trial order.

    Exact, with ties: trials with identical objective values are all on the front when
    one of them is. By default accuracy ↑, step_time ↓, params ↓; any subset of accuracy,
    step_time, params, macs and reward, or a ``{name: direction}`` mapping.
    """
    objs = _objectives(objectives)
    done = complete_trials(data, include_duplicates=include_duplicates).dropna(subset=list(objs))
    if done.empty:
        return done.reset_index(drop=True)
    mask = pareto_mask(_points(done, objs), [d == "maximize" for d in objs.values()])
    return done[mask].reset_index(drop=True)


def pareto_ranks_table(data: Data, objectives: Objectives = None, *,
                       include_duplicates: bool = False) -> pd.DataFrame:
    """Every COMPLETE trial with its non-dominated ``rank`` (0 = the front, 1 = the next...)."""
    objs = _objectives(objectives)
    done = complete_trials(data, include_duplicates=include_duplicates).dropna(subset=list(objs)).copy()
    done["rank"] = non_dominated_ranks(_points(done, objs), [d == "maximize" for d in objs.values()]) \
        if len(done) else pd.Series(dtype="int64")
    return done.sort_values(["rank", "number"], kind="stable").reset_index(drop=True)


def default_reference(data: Data, objectives: Objectives = ("accuracy", "step_time")) -> list[float]:
    """A hypervolume reference (nadir) point: 0 for maximized objectives, 1.1 x the worst otherwise.

    Accuracy and reward are never negative, so 0 bounds them; a minimized objective is
    bounded 10 % beyond the worst COMPLETE trial, so every trial adds volume. To compare
    runs, compute it once over all their trials (:func:`compare_runs` does).
    """
    objs = _objectives(objectives)
    done = complete_trials(data, include_duplicates=True)
    ref = []
    for name, direction in objs.items():
        if direction == "maximize":
            ref.append(0.0)
        else:
            worst = pd.to_numeric(done[name], errors="coerce").max() if len(done) else float("nan")
            if not np.isfinite(worst):
                raise ValueError(f"no COMPLETE trial has {name}: give a reference point")
            ref.append(float(worst) * 1.1)
    return ref


def front_hypervolume(data: Data, objectives: Objectives = ("accuracy", "step_time"),
                      reference: Sequence[float] | None = None) -> float:
    """Exact hypervolume of the COMPLETE trials (2-D, 3-D or more) in the objectives' own units.

    Args:
        data: A run or a trials DataFrame.
        objectives: Names (directions from :data:`~nas.pareto.OBJECTIVE_DIRECTIONS`) or a
            ``{name: direction}`` mapping; default accuracy ↑ and step_time ↓.
        reference: The nadir point, one value per objective; default :func:`default_reference`.

    Returns:
        The volume dominated by the trials and bounded by ``reference`` (0.0 when none
        improves on it).
    """
    objs = _objectives(objectives)
    done = complete_trials(data, include_duplicates=True).dropna(subset=list(objs))
    ref = list(reference) if reference is not None else default_reference(done, objs)
    if len(ref) != len(objs):
        raise ValueError(f"reference has {len(ref)} values for {len(objs)} objectives ({', '.join(objs)})")
    return hypervolume(_points(done, objs), ref, [d == "maximize" for d in objs.values()])


# -- the baseline and the reward ---------------------------------------------------------------
def _baseline_row(frame: pd.DataFrame) -> pd.Series | None:
    rows = frame[(frame["baseline"]) & (frame["state"] == "COMPLETE")] if "baseline" in frame else frame.iloc[:0]
    rows = rows.dropna(subset=["accuracy", "step_time", "params"])
    return None if rows.empty else rows.iloc[0]


def dominating_baseline(data: Data, objectives: Objectives = None) -> pd.DataFrame:
    """The COMPLETE trials that Pareto-dominate the baseline trial (default: accuracy, step_time, params).

    Raises:
        ValueError: The run has no COMPLETE baseline trial.
    """
    objs = _objectives(objectives)
    frame = trials_frame(data)
    base = _baseline_row(frame)
    if base is None:
        raise ValueError("the run has no COMPLETE baseline trial to compare with")
    done = complete_trials(frame).dropna(subset=list(objs))
    done = done[~done["baseline"]]
    if done.empty:
        return done.reset_index(drop=True)
    pts = _points(done, objs)
    b = np.array([float(base[n]) for n in objs])
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in objs.values()])
    p, q = pts * sign, b * sign
    dominating = (p <= q).all(axis=1) & (p < q).any(axis=1)
    return done[dominating].reset_index(drop=True)


def _reward_spec(data: Data, spec: "RewardSpec | None") -> "RewardSpec":
    from nas.reward import reward_preset

    if spec is not None:
        return spec
    reward = run_config(data).get("reward") or {"preset": "efficientnetv2"}
    options = {"preset": reward} if isinstance(reward, str) else dict(reward)
    return reward_preset(options.pop("preset"), **options)


def rescore(data: Data, spec: "RewardSpec | None" = None, *, w: float | None = None, v: float | None = None,
            step_time_ref: float | None = None, params_ref: float | None = None) -> pd.Series:
    """The reward of every trial recomputed under other constants, without retraining.

    Starts from ``spec`` (default: the run's own reward), then sets whatever is given.
    For the EfficientNetV2 reward ``A·(S/S0)^w·(P/P0)^v`` the reference S0/P0 default to
    the run's (its explicit ``step_time_ref``/``params_ref``, else the baseline trial's S
    and P, which is what the search normalised by).

    Returns:
        A float Series named ``reward``, aligned with :func:`trials_frame` (NaN where a
        trial has no accuracy, step time or parameters).

    Example:
        >>> rescore("runs/quickstart", w=0, v=0)  # doctest: +SKIP
        ... # == the accuracy of every COMPLETE trial
    """
    import dataclasses

    frame = trials_frame(data)
    base_spec = _reward_spec(data, spec)
    changes = {k: val for k, val in (("w", w), ("v", v), ("step_time_ref", step_time_ref),
                                     ("params_ref", params_ref)) if val is not None}
    new = dataclasses.replace(base_spec, **changes)
    if new.kind == "efficientnetv2" and (new.step_time_ref is None or new.params_ref is None):
        base = _baseline_row(frame)
        if base is None:
            raise ValueError("no reference for the efficientnetv2 reward: the run has no COMPLETE baseline trial; "
                             "pass step_time_ref and params_ref")
        new = new.with_reference(step_time=new.step_time_ref or float(base["step_time"]),
                                 params=new.params_ref or int(base["params"]))
    values = []
    for _, row in frame.iterrows():
        a, s, p, m = (row.get(k) for k in ("accuracy", "step_time", "params", "macs"))
        if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (a, s, p)):
            values.append(float("nan"))
            continue
        m = 0 if m is None or (isinstance(m, float) and math.isnan(m)) else int(m)
        values.append(float(new(accuracy=float(a), step_time=float(s), params=int(p), macs=m)))
    return pd.Series(values, index=frame.index, name="reward", dtype=float)


def top_trials(data: Data, k: int = 10, by: str = "reward", *, include_duplicates: bool = False) -> pd.DataFrame:
    """The ``k`` best distinct COMPLETE trials by ``by`` (highest first; lowest first for a cost)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    done = complete_trials(data, include_duplicates=include_duplicates).dropna(subset=[by])
    ascending = OBJECTIVE_DIRECTIONS.get(by, "maximize") == "minimize"
    return done.sort_values([by, "number"], ascending=[ascending, True], kind="stable").head(k).reset_index(drop=True)


def best_so_far(data: Data, by: str = "reward") -> pd.DataFrame:
    """Per finished trial (in trial order): its ``by`` value and the best one so far (NaN before the first)."""
    frame = trials_frame(data)
    frame = frame[frame["state"].isin(["COMPLETE", "PRUNED", "FAIL"])].sort_values("number")
    value = pd.to_numeric(frame[by], errors="coerce").where(frame["state"] == "COMPLETE")
    best = value.cummin() if OBJECTIVE_DIRECTIONS.get(by, "maximize") == "minimize" else value.cummax()
    best = best.ffill()  # a trial without a value keeps the best so far
    return pd.DataFrame({"number": frame["number"].to_numpy(), by: value.to_numpy(),
                         "best": best.to_numpy()})


# -- what the search learned ---------------------------------------------------------------------
def _decision_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if isinstance(c, str) and c.startswith(_PARAM)]


def decision_stats(data: Data, k: int = 10, by: str = "reward") -> pd.DataFrame:
    """How often each choice of each decision appears among the top-``k`` trials versus all of them.

    Returns:
        One row per (decision, choice): ``decision`` (``stage3.kernel``), ``stage`` (3, or
        None for stem/head), ``field`` (``kernel``), ``choice``, ``top_count``,
        ``top_share`` (of the top k), ``all_count``, ``all_share`` (of every distinct
        COMPLETE trial) and ``mean_<by>`` (mean over the trials with that choice).
    """
    done = complete_trials(data).dropna(subset=[by])
    top = top_trials(done, k, by)
    rows = []
    for column in _decision_columns(done):
        decision = column[len(_PARAM):]
        scope, _, field = decision.partition(".")
        stage = int(scope[5:]) if scope.startswith("stage") and scope[5:].isdigit() else None
        for choice in sorted(done[column].dropna().unique(), key=_sort_key):
            chosen = done[done[column] == choice]
            top_count = int((top[column] == choice).sum())
            rows.append({"decision": decision, "stage": stage, "field": field, "choice": _plain(choice),
                         "top_count": top_count, "top_share": top_count / len(top) if len(top) else float("nan"),
                         "all_count": len(chosen), "all_share": len(chosen) / len(done),
                         f"mean_{by}": float(chosen[by].mean())})
    return pd.DataFrame(rows, columns=["decision", "stage", "field", "choice", "top_count", "top_share",
                                       "all_count", "all_share", f"mean_{by}"])


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, float(value)) if isinstance(value, (int, float, np.number)) else (1, str(value))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _stage_values(arch: "Arch | str") -> list[dict[str, Any]]:
    from nas.arch import parse_arch

    arch = parse_arch(arch) if isinstance(arch, str) else arch
    return [{"block": _BLOCK_NAMES.get(s.block, s.block), "kernel": s.kernel, "expansion": _plain(s.expansion),
             "layers": s.repeats} for s in arch.stages]


def stage_choices(data: Data, k: int = 10, by: str = "reward") -> pd.DataFrame:
    """Per stage, what the top-``k`` trials picked most: block type, kernel, expansion, depth.

    Read from the arch strings, so fixed fields show too. Columns: ``stage`` and, per
    field in :data:`REDISCOVERY_FIELDS`, the most common value and ``<field>_share`` (its
    share of the top k; ties go to the value of the better trial).
    """
    top = top_trials(data, k, by)
    per_trial = [_stage_values(a) for a in top["arch"]]
    if not per_trial:
        return pd.DataFrame(columns=["stage", *[c for f in REDISCOVERY_FIELDS for c in (f, f"{f}_share")]])
    rows = []
    for i in range(max(len(p) for p in per_trial)):
        row: dict[str, Any] = {"stage": i + 1}
        for field in REDISCOVERY_FIELDS:
            values = [p[i][field] for p in per_trial if i < len(p)]
            counts: dict[Any, int] = {}
            for value in values:  # in rank order: on a tie the better trial's value wins
                counts[value] = counts.get(value, 0) + 1
            mode = max(counts, key=lambda val: counts[val])
            row[field], row[f"{field}_share"] = mode, counts[mode] / len(per_trial)
        rows.append(row)
    return pd.DataFrame(rows)


def error_edfs(data: Data,
               decisions: Sequence[str] | None = None) -> dict[str, dict[Any, tuple[np.ndarray, np.ndarray]]]:
    """pycls-style error EDFs per design choice: ``{decision: {choice: (error, F)}}``.

    Over the distinct COMPLETE trials; ``error`` = 1 - accuracy. ``decisions`` are names
    such as ``stage3.block`` (default: every decision of the run).
    """
    done = complete_trials(data).copy()
    done["error"] = 1.0 - done["accuracy"].astype(float)
    columns = _decision_columns(done)
    names = [c[len(_PARAM):] for c in columns] if decisions is None else list(decisions)
    out = {}
    for name in names:
        column = _PARAM + name
        if column not in done:
            raise ValueError(f"unknown decision {name!r} (the run has {', '.join(c[len(_PARAM):] for c in columns)})")
        if done.empty:
            out[name] = {}
            continue
        out[name] = {_plain(key): value for key, value in edf_by(done.dropna(subset=[column]), "error", column).items()}
    return out


# -- rediscovery ----------------------------------------------------------------------------------------
def stage_agreement(arch: "Arch | str", baseline: "Arch | str") -> pd.DataFrame:
    """Per stage of the longer of the two, whether ``arch`` agrees with ``baseline`` on each field.

    Columns: ``stage`` and one boolean per field of :data:`REDISCOVERY_FIELDS`; a stage
    that only one of them has agrees on nothing.
    """
    a, b = _stage_values(arch), _stage_values(baseline)
    rows = []
    for i in range(max(len(a), len(b))):
        row: dict[str, Any] = {"stage": i + 1}
        for field in REDISCOVERY_FIELDS:
            row[field] = i < len(a) and i < len(b) and a[i][field] == b[i][field]
        rows.append(row)
    return pd.DataFrame(rows, columns=["stage", *REDISCOVERY_FIELDS])


def rediscovery_score(arch: "Arch | str", baseline: "Arch | str") -> float:
    """Share of (stage, field) pairs on which ``arch`` agrees with ``baseline``, in [0, 1].

    Fields: block type, kernel, expansion and depth per stage. A baseline against itself
    scores exactly 1.0; one kernel changed in one of three stages scores 11/12.
    """
    table = stage_agreement(arch, baseline)
    if table.empty:
        return 1.0
    return float(table[list(REDISCOVERY_FIELDS)].to_numpy().mean())


@dataclass(frozen=True)
class Rediscovery:
    """How close the best found architectures came to a baseline.

    Attributes:
        baseline: The baseline's arch string.
        score: Mean :func:`rediscovery_score` of the top trials (1.0 = every one of them
            is the baseline).
        per_stage: Per stage, the share of the top trials agreeing on each field, and
            ``agreement`` (their mean).
        per_trial: The top trials (``number``, ``arch``, ``reward``) with their ``score``.
    """

    baseline: str
    score: float
    per_stage: pd.DataFrame
    per_trial: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "score": self.score,
                "per_stage": self.per_stage.to_dict(orient="records"),
                "per_trial": self.per_trial.to_dict(orient="records")}


def _run_baseline_arch(data: Data, frame: pd.DataFrame) -> str | None:
    rows = frame[frame["baseline"]] if "baseline" in frame else frame.iloc[:0]
    if len(rows) and isinstance(rows.iloc[0]["arch"], str):
        return rows.iloc[0]["arch"]
    config = run_config(data)
    if config.get("reference"):
        return str(config["reference"])
    if config.get("space"):
        from nas.spaces import load_space

        arch = load_space(config["space"]).baseline_arch()
        return None if arch is None else str(arch)
    return None


def rediscovery(data: Data, baseline: "Arch | str | None" = None, k: int = 5, by: str = "reward") -> Rediscovery:
    """Per-stage agreement of the run's ``k`` best found architectures with a baseline.

    The baseline trial the search enqueued itself is not "found" and is left out; the
    same architecture proposed again by the controller counts. ``baseline`` is a
    baseline name, an arch string or an :class:`~nas.arch.Arch` (default: the run's).
    """
    from nas.arch import Arch
    from nas.baselines import baseline as named_baseline, baseline_names

    frame = trials_frame(data)
    if baseline is None:
        baseline = _run_baseline_arch(data, frame)
        if baseline is None:
            raise ValueError("the run has no baseline: pass one (a baseline name or an arch string)")
    if isinstance(baseline, str) and baseline in baseline_names():
        baseline = named_baseline(baseline)
    base = str(baseline) if isinstance(baseline, Arch) else str(_parse(baseline))
    done = complete_trials(frame, include_duplicates=True).dropna(subset=[by])
    done = done[~done["baseline"]].drop_duplicates(subset="arch")
    top = top_trials(done, k, by, include_duplicates=True) if len(done) else done
    per_trial = pd.DataFrame({"number": top["number"].to_numpy(), "arch": top["arch"].to_numpy(),
                              by: top[by].to_numpy(),
                              "score": [rediscovery_score(a, base) for a in top["arch"]]})
    fields = list(REDISCOVERY_FIELDS)
    if len(top):
        tables = [stage_agreement(a, base)[fields].astype(float).to_numpy() for a in top["arch"]]
        n = max(t.shape[0] for t in tables)
        stacked = np.stack([np.pad(t, ((0, n - t.shape[0]), (0, 0))) for t in tables])
        per_stage = pd.DataFrame(stacked.mean(axis=0), columns=fields)
    else:
        per_stage = pd.DataFrame(np.full((len(_stage_values(base)), len(fields)), np.nan), columns=fields)
    per_stage.insert(0, "stage", range(1, len(per_stage) + 1))
    per_stage["agreement"] = per_stage[fields].mean(axis=1)
    score = float(per_trial["score"].mean()) if len(per_trial) else float("nan")
    return Rediscovery(baseline=base, score=score, per_stage=per_stage, per_trial=per_trial)


def _parse(text: str) -> "Arch":
    from nas.arch import parse_arch

    return parse_arch(text)


# -- whole runs -------------------------------------------------------------------------------------------
def run_summary(data: Data) -> dict[str, Any]:
    """What a run was and how it went: space, data, proxy, reward, controller, device,
    trial counts by state, wall time, failures (with reasons), the baseline and the best trial."""
    frame = trials_frame(data)
    config = run_config(data) if not isinstance(data, pd.DataFrame) else dict(frame.attrs.get("config") or {})
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    start = pd.to_datetime(frame.get("datetime_start"), errors="coerce").min() if len(frame) else pd.NaT
    end = pd.to_datetime(frame.get("datetime_complete"), errors="coerce").max() if len(frame) else pd.NaT
    wall = (end - start).total_seconds() if pd.notna(start) and pd.notna(end) else None
    devices = sorted({d for d in frame.get("device", pd.Series(dtype=object)).dropna().unique()})
    failed = frame[frame["state"].isin(["FAIL", "PRUNED"])]
    best = top_trials(frame, 1) if frame["reward"].notna().any() else frame.iloc[:0]
    base = _baseline_row(frame)
    controller = config.get("controller")
    options = dict(controller) if isinstance(controller, dict) else {"name": controller}
    return {
        "run": frame.attrs.get("run"), "name": config.get("name") or frame.attrs.get("study"),
        "description": config.get("description") or "",
        "space": config.get("space"), "dataset": config.get("dataset"), "proxy": config.get("proxy") or {},
        "reward": config.get("reward"), "controller": options.pop("name", None), "controller_options": options,
        "seed": config.get("seed"), "budget": config.get("trials"), "backend": config.get("backend"),
        "workers": config.get("workers"), "storage": config.get("storage"), "devices": devices,
        "trials": len(frame), "states": {k: int(v) for k, v in states.items()},
        "duplicates": int(frame["duplicate_of"].notna().sum()) if "duplicate_of" in frame else 0,
        "wall_seconds": wall, "train_seconds": float(pd.to_numeric(frame.get("seconds"), errors="coerce").sum())
        if "seconds" in frame else None,
        "failures": [{"number": int(r["number"]), "state": r["state"], "reason": r["reason"]}
                     for _, r in failed.iterrows()],
        "baseline": _row_dict(base) if base is not None else None,
        "best": _row_dict(best.iloc[0]) if len(best) else None,
    }


def _row_dict(row: pd.Series) -> dict[str, Any]:
    keys = ("number", "arch", "accuracy", "step_time", "params", "macs", "reward")
    return {k: _plain(row[k]) if k in row and pd.notna(row[k]) else None for k in keys}


def compare_runs(runs: Sequence[Data], objectives: Objectives = None,
                 reference: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per run: best reward, front size, hypervolume under one shared reference, devices.

    The reference (default :func:`default_reference` over all runs' trials together) is
    the same for every run, so their hypervolumes compare; they are normalised by the
    reference's minimized values, so they have no unit. ``frame.attrs["reference"]`` and
    ``frame.attrs["objectives"]`` say what was used; ``devices`` lists the device
    fingerprints each run measured S on (step times of different devices do not compare).
    """
    objs = _objectives(objectives)
    frames = [trials_frame(r) for r in runs]
    if not frames:
        raise ValueError("no runs to compare")
    if reference is None:
        pooled = pd.concat([complete_trials(f, include_duplicates=True) for f in frames], ignore_index=True)
        reference = default_reference(pooled, objs)
    # Each minimized objective is divided by its reference value, so the hypervolume has no
    # unit (S in seconds or ms, params in ones or millions give the same figure): the share
    # of the box between the origin and the reference point that the front dominates.
    scale = float(np.prod([r for r, d in zip(reference, objs.values()) if d == "minimize"] or [1.0]))
    rows = []
    for run, frame in zip(runs, frames):
        summary = run_summary(frame)
        done = complete_trials(frame)
        best = top_trials(frame, 1) if done["reward"].notna().any() else done.iloc[:0]
        rows.append({
            "run": str(frame.attrs.get("run") or run), "name": summary["name"], "controller": summary["controller"],
            "trials": len(frame), "complete": int((frame["state"] == "COMPLETE").sum()),
            "best_reward": float(best["reward"].iloc[0]) if len(best) else None,
            "best_trial": int(best["number"].iloc[0]) if len(best) else None,
            "best_accuracy": float(done["accuracy"].max()) if len(done) else None,
            "front_size": len(pareto_table(frame, objs)),
            "hypervolume": front_hypervolume(frame, objs, reference) / scale,
            "devices": summary["devices"],
        })
    table = pd.DataFrame(rows)
    table.attrs.update(reference=list(reference), objectives=list(objs))
    return table
