"""The quickstart search on ``backend: local`` vs ``backend: ray`` at the same parallelism: wall time.

Three runs: local with one worker (the reference), local with ``workers: 2`` and Ray with
2 trials at a time (``ray.max_concurrent: 2``). Ray's cost is what it adds over local at
the same parallelism; both are also compared with the single worker.

Each run is a fresh ``nas search`` process with its own empty step-time cache and its own
device lock folder (nothing carried over, nothing shared with other processes on the host).
Reported: wall time of each, the speed-up (local / ray), Ray's extra time (ray − local)
and its overhead against a perfect 2x (ray − local / 2), the time to the first ask and
after the last trial, how the trials' own evaluation time adds up, and what a bare
private Ray costs to start and stop. S is measured with the device held
exclusively (design, decision 3), so on a CPU-only host a trial's measurement waits for the
other's training: the 2 trials overlap only in part, by design.

    python benchmarks/local_vs_ray.py [--trials 8] [--epochs 3] [--repeats 1] [--out benchmarks/results/local_vs_ray.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "quickstart.yaml"


def _run(name: str, overrides: list[str], work: Path) -> dict[str, Any]:
    folder = work / name
    folder.mkdir(parents=True)
    env = {**os.environ, "NAS_CACHE_DIR": str(folder / "cache"), "TMPDIR": str(folder),
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="nb", dir="/tmp")}
    run_dir = folder / "run"
    cmd = [sys.executable, "-m", "nas.cli", "search", str(QUICK), *overrides, "--run-dir", str(run_dir), "--fresh"]
    print(f"{name}: nas search {' '.join(overrides)}", flush=True)
    start_wall, start = datetime.now().astimezone(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, end_wall = time.perf_counter() - start, datetime.now().astimezone()
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = json.loads(subprocess.run([sys.executable, "-m", "nas.cli", "trials", str(run_dir), "--json"],
                                     capture_output=True, text=True, check=True, cwd=ROOT).stdout)

    def when(key: str, pick) -> datetime | None:
        stamps = [datetime.fromisoformat(r[key]) for r in rows if r[key]]
        stamp = pick(stamps) if stamps else None
        return stamp.astimezone() if stamp is not None and stamp.tzinfo is None else stamp  # Optuna: local naive

    first, last = when("datetime_start", min), when("datetime_complete", max)
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None and r["duplicate_of"] is None]
    result = {
        "wall_s": round(wall, 2),
        "first_trial_start_s": round((first - start_wall).total_seconds(), 2) if first else None,
        "after_last_trial_s": round((end_wall - last).total_seconds(), 2) if last else None,
        "trials": len(rows),
        "states": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trained": len(seconds),
        "trial_seconds_sum": round(sum(seconds), 2),
        "trial_seconds_mean": round(sum(seconds) / len(seconds), 2) if seconds else None,
        "best_reward": max((r["reward"] for r in rows if r["reward"] is not None), default=None),
    }
    print(f"  wall {result['wall_s']:.1f} s, first trial asked after {result['first_trial_start_s']} s, exit "
          f"{result['after_last_trial_s']} s after the last, "
          f"{result['trained']} trained, sum of trial times {result['trial_seconds_sum']:.1f} s", flush=True)
    return result


def ray_start_stop_seconds() -> dict[str, float]:
    """A bare private Ray (as ``backend: ray`` starts it): ``ray.init`` and ``ray.shutdown`` times."""
    code = ("import time, os; os.environ['RAY_USAGE_STATS_ENABLED'] = '0'; t = time.perf_counter(); import ray\n"
            "ray.init(address='local', include_dashboard=False, _node_ip_address='127.0.0.1', "
            "object_store_memory=256 * 2**20, logging_level='ERROR', log_to_driver=False)\n"
            "up = time.perf_counter() - t; t = time.perf_counter(); ray.shutdown()\n"
            "print(round(up, 2), round(time.perf_counter() - t, 2))")
    tmp = tempfile.mkdtemp(prefix="nb", dir="/tmp")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "RAY_TMPDIR": tmp}).stdout.split()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"import_and_init_s": float(out[0]), "shutdown_s": float(out[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per backend, alternating (on a shared machine the load drifts); the fastest counts")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "local_vs_ray.json"))
    args = parser.parse_args(argv)

    common = [f"trials={args.trials}", f"proxy.epochs={args.epochs}", f"seed={args.seed}"]
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "local2": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        for i in range(args.repeats):
            runs["local"].append(_run(f"local{i}", [*common, "backend=local"], Path(tmp)))
            runs["local2"].append(_run(f"local2_{i}", [*common, "backend=local", "workers=2"], Path(tmp)))
            runs["ray"].append(_run(f"ray{i}", [*common, "backend=ray", "ray.max_concurrent=2", "ray.cpus_per_trial=1"],
                                    Path(tmp)))
    local, local2, ray = (min(runs[k], key=lambda r: r["wall_s"]) for k in ("local", "local2", "ray"))
    bare = ray_start_stop_seconds()
    speedup = local["wall_s"] / ray["wall_s"]
    result = {
        "benchmark": "local_vs_ray",
        "experiment": "experiments/quickstart.yaml",
        "overrides": common,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "local": local,
        "local_2_workers": local2,
        "ray": ray,
        "ray_vs_local_same_parallelism": round(local2["wall_s"] / ray["wall_s"], 3),
        "local_2_workers_speedup": round(local["wall_s"] / local2["wall_s"], 3),
        "all_wall_s": {k: [r["wall_s"] for r in v] for k, v in runs.items()},
        "speedup": round(speedup, 3),
        "ideal_speedup": 2.0,
        "parallel_efficiency": round(speedup / 2, 3),
        "ray_extra_s": round(ray["wall_s"] - local["wall_s"], 2),
        "ray_overhead_vs_ideal_s": round(ray["wall_s"] - local["wall_s"] / 2, 2),
        "bare_ray": bare,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"local, 1 worker {local['wall_s']:.1f} s; local, 2 workers {local2['wall_s']:.1f} s; ray, 2 at a time "
          f"{ray['wall_s']:.1f} s: ray / local at the same parallelism {ray['wall_s'] / local2['wall_s']:.2f}x the "
          f"time; 2 workers over 1: local {local['wall_s'] / local2['wall_s']:.2f}x, ray {speedup:.2f}x (ideal 2x); "
          f"a bare private Ray starts in {bare['import_and_init_s']:.1f} s and stops in {bare['shutdown_s']:.1f} s")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
