"""How repeatable is S? Measure one arch several times, each in a fresh process.

Each run is a separate process (a fresh interpreter, allocator and thread pool), as two
workers of a search would measure it, with the cache off. Reports each run's median,
p10, p90 and spread (p90/p10), and the run-to-run ratio max/min of the medians; prints
the figures and saves them as JSON.

Usage:
    python benchmarks/measure_repeatability.py [--arch efficientnet_b0] [--batch 8]
        [--resolution 64] [--runs 5] [--out benchmarks/results/measure_repeatability.json]

It runs ``nas measure ARCH --batch B --resolution R --no-cache --json``; where the
installed CLI has no ``measure`` command it falls back to ``nas.measure_step_time`` in
a fresh ``python -c`` process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_FALLBACK = """
import json, sys
import nas
from nas.measure import measure_step_time
arch_text, batch, resolution = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
arch = nas.baseline(arch_text) if arch_text in nas.baseline_names() else nas.parse_arch(arch_text)
model = nas.build_model(arch, num_classes=1000)
st = measure_step_time(model, batch=batch, resolution=resolution, num_classes=1000)
print(json.dumps(st.to_dict() | {"arch": str(arch)}))
"""


def _cli_has_measure() -> bool:
    exe = shutil.which("nas")
    if exe is None:
        return False
    proc = subprocess.run([exe, "measure", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    return proc.returncode == 0


def _run_once(arch: str, batch: int, resolution: int, use_cli: bool) -> dict[str, Any]:
    if use_cli:
        cmd = ["nas", "measure", arch, "--batch", str(batch), "--resolution",
               str(resolution), "--no-cache", "--json"]
    else:
        cmd = [sys.executable, "-c", _FALLBACK, arch, str(batch), str(resolution)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed (exit {proc.returncode}): {' '.join(cmd[:3])}"
                         f"\n{proc.stderr.strip()[-2000:]}")
    # The JSON document ends the output; skip any chatter printed before it.
    text = proc.stdout.strip()
    if "{" not in text:
        raise SystemExit(f"no JSON in the output of {' '.join(cmd[:3])}: {text[-500:]!r}")
    data = json.loads(text[text.index("{"):])
    return {
        "step_time": float(data["step_time"]),
        "step_time_p10": float(data["step_time_p10"]),
        "step_time_p90": float(data["step_time_p90"]),
        "spread_p90_p10": float(data["step_time_p90"]) / float(data["step_time_p10"]),
        "repeats": data.get("repeats"),
        "inference_latency": data.get("inference_latency"),
        "device": data.get("device"),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="efficientnet_b0",
                        help="baseline name or arch string (default efficientnet_b0)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/measure_repeatability.json"))
    args = parser.parse_args(argv)
    for name in ("batch", "resolution", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    use_cli = _cli_has_measure()
    method = "nas measure (CLI)" if use_cli else "measure_step_time in python -c (fallback)"
    print(f"{args.arch} batch {args.batch} resolution {args.resolution}, "
          f"{args.runs} runs via {method}")
    runs = []
    for i in range(args.runs):
        run = _run_once(args.arch, args.batch, args.resolution, use_cli)
        runs.append(run)
        print(f"run {i + 1}: median {run['step_time'] * 1e3:8.2f} ms  "
              f"p10 {run['step_time_p10'] * 1e3:8.2f}  p90 {run['step_time_p90'] * 1e3:8.2f}  "
              f"spread {run['spread_p90_p10']:.3f}  steps {run['repeats']}  "
              f"wall {run['wall_s']:.1f} s")
    medians = [r["step_time"] for r in runs]
    summary = {
        "arch": args.arch,
        "batch": args.batch,
        "resolution": args.resolution,
        "runs": args.runs,
        "method": method,
        "device": runs[0]["device"],
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "per_run": runs,
        "median_of_medians": sorted(medians)[len(medians) // 2],
        "run_to_run_max_over_min": max(medians) / min(medians),
        "max_wall_s": max(r["wall_s"] for r in runs),
    }
    print(f"run-to-run max/min of medians: {summary['run_to_run_max_over_min']:.3f}  "
          f"(device {summary['device']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
