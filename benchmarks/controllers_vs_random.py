"""Controllers against random search on a cheap objective whose optimum is known.

Training candidates (even the ``tiny`` space on digits, several seconds per candidate on
a CPU) is far too expensive for a many-seeds comparison, so this benchmark scores each
architecture with an objective computed *exactly* from its parameter count and MACs
(``nas.cost.model_cost``, the figures a search records) and whose best value is known:

``target`` (default)
    ``-|log(MACs/MACs*)| - |log(P/P*)|`` at ``--resolution`` with (MACs*, P*) those of a
    random member of the space, ``space.sample(target_seed + seed)``: each seed is another
    problem instance, and every controller faces the same instance for a given seed. The
    optimum 0 is reachable (by that member, and by any arch with the same two figures).
``constrained``
    ``log(MACs/MACs0) - 10 * max(0, log(P/P0))`` with (MACs0, P0) the space's baseline: the
    most compute under a parameter cap (an MnasNet-style penalty). Its optimum is found by
    brute force over every member, so this objective needs a space small enough to
    enumerate (``tiny``: 31,104 archs).

Parameters and MACs are sums over stages, and with channels and strides fixed by the
space a stage's share depends only on that stage's own decisions. The script
therefore calls ``model_cost`` once per (stage, stage-decisions) combination, checks the
additive decomposition against ``model_cost`` on whole random archs, and then scores any
arch (and enumerates a small space) exactly in microseconds. Spaces with stem, head or
channel choices fall back to calling ``model_cost`` per trial (still exact, slower).

Every controller runs as a plain Optuna loop, ``optuna.create_study(sampler=
make_sampler(name, seed=s))`` + ``study.optimize``, one ``suggest_categorical`` per
decision; a re-proposed arch costs a trial here (a real search records it without using
budget; ``controllers_nb201.py`` reports the share of distinct archs). One run of the largest
budget is made per (controller, seed) and the smaller budgets are read off its first
trials: Optuna samplers never see ``n_trials``, so a prefix of a 300-trial run is exactly
a 100-trial run. Reported per controller and budget, over seeds: best value (mean, std,
min, max), regret = optimum - best, the mean value of the last 20 % of the budget's
trials (where the controller samples at the end), the share of distinct archs, and
sampler wall time per trial, and the seeds on which a controller beat random (paired:
same seed, same problem instance). On an enumerable space also the exact expected best of
uniform random sampling and the share of the space strictly better than the best found.

    python benchmarks/controllers_vs_random.py                    # efficientnetv2, target
    python benchmarks/controllers_vs_random.py --space tiny --objective constrained
    python benchmarks/controllers_vs_random.py --budget 100 300 --seeds 0 1 2 3 4 \
        --out benchmarks/results/controllers_vs_random.json

Single-threaded on purpose (torch and BLAS limited to one thread) to keep its CPU use
modest; the sampler times it reports are sensitive to other load on the machine.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.controllers import CONTROLLERS, make_sampler  # noqa: E402
from nas.cost import model_cost  # noqa: E402
from nas.spaces import SearchSpace, load_space  # noqa: E402

PENALTY = 10.0  # weight of the parameter-cap violation in the constrained objective
MAX_ENUMERATE = 2_000_000


# -- exact cost tables ----------------------------------------------------------------------
class CostModel:
    """Exact params/MACs of any member, from per-stage tables (or model_cost per arch)."""

    def __init__(self, space: SearchSpace, resolution: int, num_classes: int, *, check: int = 20,
                 seed: int = 12345) -> None:
        self.space, self.resolution, self.num_classes = space, resolution, num_classes
        self.decisions = space.decisions
        names = [d.name for d in self.decisions]
        self.stage_names: list[list[str]] = []
        for st in space.stages:
            self.stage_names.append([n for n in names if n.startswith(f"stage{st.index}.")])
        covered = {n for group in self.stage_names for n in group}
        # Per-stage cost is independent of the other stages only if channels never vary.
        self.additive = covered == set(names) and not any(n.endswith(".channels") for n in names)
        self.tables: list[dict[tuple, tuple[int, int]]] = []
        self.calls = 0
        start = time.perf_counter()
        if self.additive:
            self._build_tables()
            self._check(check, seed)
        self.build_seconds = time.perf_counter() - start

    def _cost(self, values: dict[str, Any]):
        self.calls += 1
        return model_cost(self.space.from_decisions(values), self.resolution, self.num_classes)

    def _build_tables(self) -> None:
        choices = {d.name: d.choices for d in self.decisions}
        default = {d.name: d.choices[0] for d in self.decisions}
        base = self._cost(default)
        fixed_params = base.params - sum(base.stage_params)
        fixed_macs = base.macs - sum(base.stage_macs)
        for i, group in enumerate(self.stage_names):
            table = {}
            for combo in itertools.product(*(choices[n] for n in group)):
                cost = self._cost({**default, **dict(zip(group, combo))})
                table[combo] = (cost.stage_params[i], cost.stage_macs[i])
            self.tables.append(table)
        self.fixed = (fixed_params, fixed_macs)

    def _check(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(count):
            values = {d.name: rng.choice(d.choices) for d in self.decisions}
            exact = self._cost(values)
            got = self.cost(values)
            if got != (exact.params, exact.macs):
                raise AssertionError(f"per-stage decomposition is not exact for {values}: {got} vs "
                                     f"({exact.params}, {exact.macs})")

    def cost(self, values: dict[str, Any]) -> tuple[int, int]:
        """(params, MACs) of the member with these decision values."""
        if not self.additive:
            c = model_cost(self.space.from_decisions(values), self.resolution, self.num_classes)
            return c.params, c.macs
        params, macs = self.fixed
        for group, table in zip(self.stage_names, self.tables):
            p, m = table[tuple(values[n] for n in group)]
            params += p
            macs += m
        return params, macs

    def enumerate_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(params, MACs) of every member of the space, via broadcasting the stage tables."""
        if not self.additive:
            raise ValueError("enumeration needs the additive per-stage tables")
        params = np.array([self.fixed[0]], dtype=np.int64)
        macs = np.array([self.fixed[1]], dtype=np.int64)
        for table in self.tables:
            tp = np.array([v[0] for v in table.values()], dtype=np.int64)
            tm = np.array([v[1] for v in table.values()], dtype=np.int64)
            params = (params[:, None] + tp[None, :]).ravel()
            macs = (macs[:, None] + tm[None, :]).ravel()
        return params, macs


# -- objectives ------------------------------------------------------------------------------
class Problem:
    """One instance of an objective: ``score(params, macs)`` (numpy-friendly) and its optimum."""

    def __init__(self, kind: str, model: CostModel, target_seed: int) -> None:
        space = model.space
        if kind == "target":
            values = space.to_decisions(space.sample(target_seed))
            p_star, m_star = model.cost(values)
            self.info: dict[str, Any] = {"target_seed": target_seed, "target_arch": str(space.from_decisions(values)),
                                         "target_params": p_star, "target_macs": m_star}

            def score(p: Any, m: Any) -> Any:
                return -np.abs(np.log(m / m_star)) - np.abs(np.log(p / p_star))
        elif kind == "constrained":
            ref = space.baseline_arch()
            if ref is None:
                raise SystemExit(f"space {space.name!r} has no baseline: the constrained objective needs one")
            p0, m0 = model.cost(space.to_decisions(ref))
            self.info = {"reference_arch": str(ref), "reference_params": p0, "reference_macs": m0,
                         "penalty": PENALTY}

            def score(p: Any, m: Any) -> Any:
                return np.log(m / m0) - PENALTY * np.maximum(0.0, np.log(p / p0))
        else:
            raise SystemExit(f"unknown objective {kind!r}")
        self.score = score
        self.all_values: np.ndarray | None = None
        if model.additive and space.size <= MAX_ENUMERATE:
            t = time.perf_counter()
            params, macs = model.enumerate_all()
            self.all_values = score(params.astype(np.float64), macs.astype(np.float64))
            self.optimum = float(self.all_values.max())
            self.info.update(optimum_source="brute force over every member",
                             enumerate_seconds=round(time.perf_counter() - t, 3),
                             optimum_count=int(np.sum(self.all_values >= self.optimum - 1e-12)),
                             value_median=float(np.median(self.all_values)),
                             value_min=float(self.all_values.min()))
        elif kind == "target":
            self.optimum = 0.0
            self.info["optimum_source"] = "by construction: the target member scores 0, no arch scores more"
        else:
            raise SystemExit(f"the constrained objective needs an enumerable space (<= {MAX_ENUMERATE:,} archs, "
                             f"no channel choices); {space.name} has {space.size:,}")
        self.info["optimum"] = self.optimum


# -- runs ----------------------------------------------------------------------------------------
def run_one(controller: str, seed: int, trials: int, model: CostModel,
            score: Callable[[int, int], float]) -> dict[str, Any]:
    decisions = model.decisions
    values: list[float] = []
    archs: list[tuple] = []
    sampler = make_sampler(controller, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    eval_seconds = 0.0

    def objective(trial: optuna.Trial) -> float:
        nonlocal eval_seconds
        chosen = {d.name: trial.suggest_categorical(d.name, d.choices) for d in decisions}
        t = time.perf_counter()
        p, m = model.cost(chosen)
        value = float(score(p, m))
        eval_seconds += time.perf_counter() - t
        values.append(value)
        archs.append(tuple(chosen[d.name] for d in decisions))
        return value

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - start
    return {"values": values, "archs": archs, "seconds": wall, "sampler_seconds": wall - eval_seconds}


def summarize(runs: list[dict[str, Any]], problems: list[Problem], budget: int) -> dict[str, Any]:
    best = [max(r["values"][:budget]) for r in runs]
    regret = [pr.optimum - b for pr, b in zip(problems, best)]
    tail_n = max(1, math.ceil(0.2 * budget))
    tail = [statistics.fmean(r["values"][budget - tail_n:budget]) for r in runs]
    distinct = [len(set(r["archs"][:budget])) / budget for r in runs]
    out: dict[str, Any] = {
        "budget": budget, "seeds": len(runs),
        "best_mean": statistics.fmean(best), "best_std": _std(best), "best_min": min(best), "best_max": max(best),
        "best_per_seed": best,
        "regret_mean": statistics.fmean(regret), "regret_std": _std(regret),
        "hit_optimum": sum(1 for r in regret if r <= 1e-9),
        "last20_mean": statistics.fmean(tail), "last20_std": _std(tail),
        "distinct_fraction": statistics.fmean(distinct),
        "sampler_ms_per_trial": 1e3 * statistics.fmean(r["sampler_seconds"] / len(r["values"]) for r in runs),
    }
    if all(pr.all_values is not None for pr in problems):
        # Share of the space strictly better than the best found (0 = found the optimum).
        out["better_fraction_mean"] = statistics.fmean(
            float(np.mean(pr.all_values > b + 1e-12)) for pr, b in zip(problems, best))
    return out


def expected_random_best(all_values: np.ndarray, n: int) -> float:
    """E[max of n uniform draws with replacement] over the enumerated values."""
    v = np.sort(all_values)
    size = len(v)
    cdf = np.arange(1, size + 1) / size
    prev = np.arange(0, size) / size
    return float(np.sum(v * (cdf**n - prev**n)))


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


# -- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="efficientnetv2", help="shipped space name or YAML path")
    parser.add_argument("--objective", choices=("target", "constrained"), default="target")
    parser.add_argument("--budget", type=int, nargs="+", default=[100, 300], help="trial budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    parser.add_argument("--resolution", type=int, default=None,
                        help="resolution of the MACs (default 128 for efficientnetv2/efficientnet, else 32)")
    parser.add_argument("--num-classes", type=int, default=None, help="default 1000, or 10 for tiny")
    parser.add_argument("--target-seed", type=int, default=2024, help="seed of the target member (target objective)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default benchmarks/results/controllers_vs_random[_SPACE_OBJECTIVE].json)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(args.space)
    resolution = args.resolution or (32 if space.name == "tiny" else 128)
    num_classes = args.num_classes or (10 if space.name == "tiny" else 1000)
    budgets = sorted(set(args.budget))
    if args.out is None:
        default_combo = (args.space, args.objective) == ("efficientnetv2", "target")
        suffix = "" if default_combo else f"_{space.name}_{args.objective}"
        args.out = Path(f"benchmarks/results/controllers_vs_random{suffix}.json")

    print(f"space {space.name}: {len(space.decisions)} decisions, {space.size:,} archs; objective "
          f"{args.objective}; MACs at {resolution} px, {num_classes} classes", flush=True)
    model = CostModel(space, resolution, num_classes)
    print(f"cost model: {'per-stage tables' if model.additive else 'model_cost per arch'}, {model.calls} "
          f"model_cost calls in {model.build_seconds:.1f} s (decomposition checked on 20 random archs)", flush=True)

    if args.objective == "target":  # a different target member per seed: several problem instances
        problems = [Problem(args.objective, model, args.target_seed + seed) for seed in args.seeds]
    else:
        problems = [Problem(args.objective, model, args.target_seed)] * len(args.seeds)
    for seed, pr in zip(args.seeds, problems):
        print(f"seed {seed}: optimum {pr.optimum:.4f} ({pr.info['optimum_source']})" +
              (f", reached by {pr.info['optimum_count']} arch(s), median value {pr.info['value_median']:.4f}"
               if pr.all_values is not None else "") +
              (f"; target {pr.info['target_arch']}" if "target_arch" in pr.info else ""), flush=True)
        if args.objective == "constrained":
            break  # one instance, the same for every seed

    runs: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for controller in args.controllers:
        runs[controller] = []
        for seed, pr in zip(args.seeds, problems):
            r = run_one(controller, seed, budgets[-1], model, pr.score)
            runs[controller].append(r)
            print(f"  {controller:<9} seed {seed}: best {max(r['values']):.4f}  ({r['seconds']:.1f} s)", flush=True)
    total_seconds = time.perf_counter() - started

    results = {c: [summarize(rs, problems, b) for b in budgets] for c, rs in runs.items()}
    if "random" in runs:  # paired by seed: the same problem instance for both
        for c, rs in runs.items():
            for row, b in zip(results[c], budgets):
                mine = [max(r["values"][:b]) for r in rs]
                theirs = [max(r["values"][:b]) for r in runs["random"]]
                row["wins_vs_random"] = sum(1 for x, y in zip(mine, theirs) if x > y + 1e-12)
                row["ties_vs_random"] = sum(1 for x, y in zip(mine, theirs) if abs(x - y) <= 1e-12)
    random_expected = None
    if all(pr.all_values is not None for pr in problems):
        random_expected = {b: statistics.fmean(expected_random_best(pr.all_values, b) for pr in problems)
                           for b in budgets}
    _print_table(results, budgets, statistics.fmean(pr.optimum for pr in problems), random_expected)

    payload = {
        "benchmark": "controllers_vs_random",
        "space": space.name, "space_size": space.size, "decisions": len(space.decisions),
        "objective": args.objective,
        "problems": [{"seed": seed, **pr.info} for seed, pr in zip(args.seeds, problems)],
        "resolution": resolution, "num_classes": num_classes, "budgets": budgets, "seeds": args.seeds,
        "cost_model": {"additive_tables": model.additive, "model_cost_calls": model.calls,
                       "build_seconds": round(model.build_seconds, 2)},
        "random_expected_best": random_expected,
        "results": results,
        "curves": {c: [_best_so_far(r["values"]) for r in rs] for c, rs in runs.items()},
        "run_seconds": round(total_seconds, 1),
        "host": {"python": platform.python_version(), "optuna": optuna.__version__, "torch": torch.__version__,
                 "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "note": "cheap exact objective from params/MACs, not accuracy: training every trial (even tiny on digits, "
                "seconds per candidate) for 5 controllers x seeds x budgets would take hours on a CPU",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"\nsaved {args.out} (total {total_seconds:.0f} s)")
    return 0


def _best_so_far(values: list[float]) -> list[float]:
    out, best = [], -math.inf
    for v in values:
        best = max(best, v)
        out.append(round(best, 6))
    return out


def _print_table(results: dict[str, list[dict[str, Any]]], budgets: list[int], optimum: float | None,
                 random_expected: dict[int, float] | None) -> None:
    print()
    header = (f"{'controller':<10} {'budget':>6}  {'best mean ± std':>17}  {'[min, max]':>18}  {'regret':>15}  "
              f"{'hit':>5}  {'wins':>5}  {'last-20% mean':>15}  {'distinct':>8}  {'ms/trial':>8}")
    if random_expected is not None:
        header += f"  {'better%':>8}"
    print(header)
    print("-" * len(header))
    for b_index, budget in enumerate(budgets):
        for controller, rows in results.items():
            s = rows[b_index]
            line = (f"{controller:<10} {budget:>6}  {s['best_mean']:>8.4f} ± {s['best_std']:<6.4f}  "
                    f"[{s['best_min']:>7.4f}, {s['best_max']:>7.4f}]  "
                    f"{s.get('regret_mean', float('nan')):>7.4f} ± {s.get('regret_std', float('nan')):<5.3f}  "
                    f"{s['hit_optimum']:>2}/{s['seeds']:<2}  "
                    f"{str(s['wins_vs_random']) + '/' + str(s['seeds']) if 'wins_vs_random' in s else '-':>5}  "
                    f"{s['last20_mean']:>7.4f} ± {s['last20_std']:<5.3f}  "
                    f"{100 * s['distinct_fraction']:>7.0f}%  {s['sampler_ms_per_trial']:>8.1f}")
            if random_expected is not None:
                line += f"  {100 * s['better_fraction_mean']:>7.3f}%"
            print(line)
        if random_expected is not None:
            note = f"(exact E[best] of uniform random at {budget} trials: {random_expected[budget]:.4f})"
            print(f"{note:>60}")
        print()
    if optimum is not None:
        print(f"optimum {optimum:.4f} (mean over seeds); regret = optimum - best; hit = seeds that reached the "
              "optimum; wins = seeds where the best beat random's best on the same seed (same problem); "
              "last-20% = mean value of the budget's last 20% of trials; distinct = share of distinct archs "
              "among the trials; ms/trial = sampler + Optuna time per trial over the whole "
              f"{budgets[-1]}-trial run; better% = share of the space strictly better than the best found")


if __name__ == "__main__":
    sys.exit(main())
