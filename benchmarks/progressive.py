"""Progressive learning vs fixed-size training (EfficientNetV2 §4) on digits: wall time and final accuracy.

Every arm is one ``nas train`` process, as a user runs it, on the same network, seed
(hence initial weights), recipe and epochs, evaluated on the same held-out images at the
same final size. ``fixed`` trains every epoch at the final size with the network's own
dropout (the builder's 0.2) and no RandAugment or mixup; each progressive arm adds
``--progressive`` and its options (default arms: the EfficientNetV2-S defaults, and the
same schedule with RandAugment only up to 5 — weaker regularisation for a network and a
data set far smaller than V2-S's, as §4 scales regularisation with capacity). Each seed
runs its arms back to back, in rotating order, so a shared machine's load falls on all of
them alike; the ratios are taken per seed, and their spread is reported. Wall time is the
time inside training (``train_seconds``: data to the device, every epoch, every
evaluation); CPU time is the whole process's (start-up included), steadier than wall time
when neighbours come and go.

    python benchmarks/progressive.py --seeds 5 --epochs 6 --resolution 32
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ARCH = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 mb_r2_k3_s2_e4_c64_se0.25 head_c256"
ARMS = {"v2s": "", "randaug_0_5": "--randaug 0:5"}
# the targets: at most 0.75x the fixed arm's wall time, at most 0.5 points less accurate
TIME_TARGET = 0.75
ACCURACY_TARGET = 0.005


def _nas_train(seed: int, args: argparse.Namespace, options: list[str]) -> dict[str, Any]:
    """One ``nas train --json`` process: its JSON, and the CPU seconds it used."""
    command = [sys.executable, "-m", "nas.cli", "train", ARCH, "--dataset", "digits", "--epochs", str(args.epochs),
               "--resolution", str(args.resolution), "--seed", str(seed), "--json", *options]
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr[-500:]}")
    data = json.loads(proc.stdout)
    return {"seconds": data["train_seconds"],
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "accuracy": data["accuracy"], "history": data["history"]}


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def _arm(text: str) -> tuple[str, str]:
    name, _, options = text.partition("=")
    if not name or name == "fixed":
        raise argparse.ArgumentTypeError(f"an arm is NAME=OPTIONS with a name other than 'fixed', got {text!r}")
    return name, options


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, each trains every arm")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--resolution", type=int, default=32, help="the final size, and the fixed arm's")
    parser.add_argument("--arm", type=_arm, action="append", metavar="NAME=OPTIONS",
                        help="a progressive arm: nas train options after --progressive (repeatable; default: "
                             + ", ".join(f"{k}={v!r}" for k, v in ARMS.items()) + ")")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run (default: unset)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/progressive.json"))
    args = parser.parse_args(argv)
    arms = {"fixed": []} | {name: ["--progressive", *options.split()] for name, options in (args.arm or ARMS.items())}

    runs = []
    names = list(arms)
    for seed in range(args.seeds):
        order = names[seed % len(names):] + names[:seed % len(names)]
        results = {}
        for name in order:
            results[name] = _nas_train(seed, args, arms[name])
            print(f"seed {seed} {name:12s} accuracy {results[name]['accuracy']:.4f}  {results[name]['seconds']:6.1f} s "
                  f"wall  {results[name]['cpu_seconds']:6.1f} s CPU", file=sys.stderr, flush=True)
        runs.append({"seed": seed, **{name: results[name] for name in names}})

    summary = {"fixed": {"accuracy": _spread([r["fixed"]["accuracy"] for r in runs]),
                         "seconds": _spread([r["fixed"]["seconds"] for r in runs])}}
    for name in names[1:]:
        time_ratio = _spread([r[name]["seconds"] / r["fixed"]["seconds"] for r in runs])
        drop = _spread([r["fixed"]["accuracy"] - r[name]["accuracy"] for r in runs])
        summary[name] = {
            "options": " ".join(arms[name]),
            "accuracy": _spread([r[name]["accuracy"] for r in runs]),
            "seconds": _spread([r[name]["seconds"] for r in runs]),
            "time_ratio": time_ratio,
            "cpu_ratio": _spread([r[name]["cpu_seconds"] / r["fixed"]["cpu_seconds"] for r in runs]),
            # in accuracy points lost; judged on the mean over seeds: one seed's accuracy
            # moves by a few of digits' 359 held-out images, more than the 0.5-point margin
            "accuracy_drop": drop,
            "time_met": time_ratio["mean"] <= TIME_TARGET,
            "accuracy_met": drop["mean"] <= ACCURACY_TARGET,
        }
    result = {
        "benchmark": "progressive",
        "arch": ARCH,
        "dataset": "digits",
        "epochs": args.epochs,
        "resolution": args.resolution,
        "arms": {name: " ".join(options) for name, options in arms.items()},
        "targets": {"time_ratio_at_most": TIME_TARGET, "accuracy_drop_at_most": ACCURACY_TARGET},
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "threads": args.threads,
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
