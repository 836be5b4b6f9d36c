"""Prepared, memory-mapped data at scale: a trial's memory, shared page cache, throughput, prepare speed.

Four measurements, each on data this script generates in a temporary folder (deleted at
the end; ``--tmp`` chooses where, it needs about twice ``--big-gb`` of free disk):

1. **A trial's own memory**: the peak anonymous resident memory (RssAnon, summed over the
   process tree, sampled from /proc) of ``nas evaluate --dataset prepared`` (one epoch),
   on a prepared set of ``--big-gb`` and of ``--small-gb``. The data is mapped, so the two
   should be close and far below the set's size.
2. **Several trials on one host**: ``--trials`` such evaluations at once over the big set;
   how much the host's used memory (MemTotal - MemFree, page cache included) grows, against
   one shared copy of the set plus each trial's own memory.
3. **Throughput**: training images/s of the memory-mapped (streamed) path against the
   in-memory (resident) path: same network, batch and seed, 32 px, on the CPU.
4. **Prepare speed**: ``nas data prepare`` of 256-px JPEGs to 128 px with 1 and 2 (``--workers``)
   decoding processes: images/s while decoding (per process), and overall (with the
   workers' start-up, the listing and the checksums).

    python benchmarks/data_scale.py                       # full: 8 GB and 0.5 GB sets, ~20 min on 2 cores
    python benchmarks/data_scale.py --quick               # 1 GB and 0.1 GB, ~5 min
    python benchmarks/data_scale.py --only prepare --workers 1 2 4 8

The machine may be shared: timings are noisy, and the host-memory figure moves with
whatever else runs. Output: a table, and ``benchmarks/results/data_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# as the nas command does (nas/cli/__init__.py): short OpenMP spins, so a shared CPU does
# not slow training several-fold; must be set before torch loads
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# a network small enough that the data path, not the convolutions, sets a trial's memory
TINY = "stem_k3_s2_c8 mb_r1_k3_s2_e1_c8 head_c32"
NET = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 mb_r2_k3_s2_e4_c64_se0.25 head_c256"
PARTS = ("memory", "shared", "throughput", "prepare")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-gb", type=float, default=8.0, help="size of the large prepared set (default 8)")
    parser.add_argument("--small-gb", type=float, default=0.5, help="size of the small prepared set (default 0.5)")
    parser.add_argument("--stored", type=int, default=128, help="stored resolution of the generated sets (128)")
    parser.add_argument("--proxy", type=int, default=16, help="proxy resolution of the memory trials (16)")
    parser.add_argument("--trials", type=int, default=4, help="concurrent trials of the shared-memory run (4)")
    parser.add_argument("--throughput-images", type=int, default=8192)
    parser.add_argument("--jpegs", type=int, default=2000, help="256-px JPEGs for the prepare speed (2000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="decoding processes to compare (1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per throughput figure, median kept (3)")
    parser.add_argument("--quick", action="store_true", help="1 GB / 0.1 GB sets, fewer images")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--tmp", default=None, help="where to generate the data (default: the system's temp dir)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "data_scale.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.big_gb, args.small_gb = min(args.big_gb, 1.0), min(args.small_gb, 0.1)
        args.throughput_images, args.jpegs, args.repeats = 4096, 600, 3

    work = Path(tempfile.mkdtemp(prefix="nas-data-scale-", dir=args.tmp))
    env = {**os.environ, "NAS_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results: dict[str, Any] = {"machine": _machine(), "args": {k: v for k, v in vars(args).items() if k != "out"}}
    try:
        if "memory" in args.only or "shared" in args.only:
            sets = {name: _make_set(work, name, gb, args.stored) for name, gb in
                    (("small", args.small_gb), ("big", args.big_gb))}
            results["sets"] = {name: s["info"] for name, s in sets.items()}
            if "memory" in args.only:
                results["memory"] = {name: _trial_memory(s["path"], args.proxy, env) for name, s in sets.items()}
            if "shared" in args.only:
                results["shared"] = _shared(sets["big"], args.trials, args.proxy, env)
        if "throughput" in args.only:
            results["throughput"] = _throughput(work, args.throughput_images, args.repeats)
        if "prepare" in args.only:
            results["prepare"] = _prepare_speed(work, args.jpegs, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


# --------------------------------------------------------------------------- data


def _make_set(work: Path, name: str, gb: float, resolution: int) -> dict[str, Any]:
    """A prepared set of about ``gb`` GB: random images streamed into an .npz, then ``nas data prepare``."""
    from nas.data import prepare

    row = 3 * resolution * resolution
    n = max(64, int(gb * 1e9 / row))
    npz = work / f"{name}.npz"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    # written member by member, uncompressed (as np.savez does), without the set ever in memory
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (n, 3, resolution, resolution)})
            for start in range(0, n, 4096):
                f.write(rng.integers(0, 256, size=(min(4096, n - start), row), dtype=np.uint8).tobytes())
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(n) % 100)
    written = time.perf_counter() - t0
    result = prepare(npz, work / name, resolution=resolution)
    npz.unlink()
    size = sum(p.stat().st_size for p in (work / name).iterdir())
    info = {"images": n, "resolution": resolution, "bytes": size, "npz_write_s": round(written, 1),
            "prepare_s": round(result.seconds, 1),
            "prepare_mb_per_s": round(size / 1e6 / result.seconds, 1)}
    print(f"{name}: {n:,} images at {resolution} px, {size / 1e9:.2f} GB prepared in {result.seconds:.1f} s",
          flush=True)
    return {"path": work / name, "info": info}


# --------------------------------------------------------------------------- memory


def _anon_tree(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) in bytes of ``pid`` and its descendants."""
    anon = file = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) * 1024
    except OSError:
        return 0, 0
    for child in children:
        a, f = _anon_tree(int(child))
        anon, file = anon + a, file + f
    return anon, file


def _host_used() -> int:
    """MemTotal - MemFree: what the host holds, page cache included."""
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()}
    return info["MemTotal"] - info["MemFree"]


def _evaluate_cmd(path: Path, proxy: int) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "evaluate", TINY, "--dataset", "prepared", "--data-dir", str(path),
            "--epochs", "1", "--resolution", str(proxy), "--batch", "256", "--json"]


def _run_sampled(commands: list[list[str]], env: dict[str, str]) -> dict[str, Any]:
    """Run commands at once; peak RssAnon / RssFile of each tree and the host's peak used memory."""
    before = _host_used()
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for c in commands]
    peaks = [[0, 0] for _ in procs]
    host = [before]
    while any(p.poll() is None for p in procs):
        for peak, p in zip(peaks, procs):
            anon, file = _anon_tree(p.pid)
            peak[0], peak[1] = max(peak[0], anon), max(peak[1], file)
        host[0] = max(host[0], _host_used())
        time.sleep(0.1)
    outputs = [p.communicate() for p in procs]
    failed = [(p.returncode, err[-500:]) for p, (_, err) in zip(procs, outputs) if p.returncode]
    if failed:
        raise RuntimeError(f"a trial failed: {failed[0]}")
    accuracy = [json.loads(out)["accuracy"] for out, _ in outputs]
    return {"anon": [a for a, _ in peaks], "file": [f for _, f in peaks], "host_before": before,
            "host_peak": host[0], "seconds": round(time.perf_counter() - start, 1), "accuracy": accuracy}


def _trial_memory(path: Path, proxy: int, env: dict[str, str]) -> dict[str, Any]:
    run = _run_sampled([_evaluate_cmd(path, proxy)], env)
    print(f"trial on {path.name}: peak RssAnon {run['anon'][0] / 1e9:.3f} GB, RssFile {run['file'][0] / 1e9:.3f} GB, "
          f"{run['seconds']} s", flush=True)
    return {"rss_anon": run["anon"][0], "rss_file": run["file"][0], "seconds": run["seconds"]}


def _shared(big: dict[str, Any], trials: int, proxy: int, env: dict[str, str]) -> dict[str, Any]:
    run = _run_sampled([_evaluate_cmd(big["path"], proxy) for _ in range(trials)], env)
    growth = run["host_peak"] - run["host_before"]
    print(f"{trials} trials on {big['path'].name}: host used memory grew {growth / 1e9:.2f} GB, "
          f"RssAnon per trial {[round(a / 1e9, 3) for a in run['anon']]} GB, {run['seconds']} s", flush=True)
    return {"trials": trials, "host_growth": growth, "rss_anon": run["anon"], "rss_file": run["file"],
            "set_bytes": big["info"]["bytes"], "seconds": run["seconds"]}


# --------------------------------------------------------------------------- throughput


def _throughput(work: Path, images: int, repeats: int) -> dict[str, Any]:
    """images/s of the streamed (mapped) and resident (in-memory) paths: same net, batch, seed, 32 px."""
    import torch

    from nas import build_model, parse_arch
    from nas.data import Dataset, Split, load_dataset, prepare
    from nas.train import ProxyConfig, train

    rng = np.random.default_rng(0)
    y = np.arange(images + 1024) % 10
    x = rng.integers(0, 256, size=(images + 1024, 3, 32, 32), dtype=np.uint8)
    np.savez(work / "tp.npz", x=x, y=y)
    prepare(work / "tp.npz", work / "tp", resolution=32, val_size=1024)
    mapped = load_dataset("prepared", data_dir=work / "tp")
    # the same arrays read into memory: what load_dataset gives for a small set
    resident = Dataset(**{**{f: getattr(mapped, f) for f in ("name", "num_classes", "hflip", "mean", "std")},
                          "train": Split.of(torch.from_numpy(np.array(mapped.train.x)),
                                            torch.from_numpy(np.array(mapped.train.y))),
                          "val": Split.of(torch.from_numpy(np.array(mapped.val.x)),
                                          torch.from_numpy(np.array(mapped.val.y)))})
    config = ProxyConfig(epochs=1, resolution=32, batch_size=128)
    rates: dict[str, list[float]] = {"in_memory": [], "mapped": []}
    accuracy: dict[str, float] = {}
    train(build_model(parse_arch(NET), num_classes=10), resident, config, device="cpu")  # warm-up, not counted
    for repeat in range(repeats):
        pair = (("in_memory", resident), ("mapped", mapped))
        for name, data in pair if repeat % 2 == 0 else pair[::-1]:  # alternate: neither always goes first
            torch.manual_seed(0)
            model = build_model(parse_arch(NET), num_classes=10)
            result = train(model, data, config, device="cpu")
            rates[name].append(result.images_per_second)
            accuracy[name] = result.accuracy
    out = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    out["runs"] = rates
    out["ratio"] = round(out["mapped"] / out["in_memory"], 3)
    out["same_accuracy"] = accuracy["mapped"] == accuracy["in_memory"]
    print(f"throughput at 32 px: in memory {out['in_memory']} img/s, mapped {out['mapped']} img/s "
          f"(ratio {out['ratio']}), same accuracy: {out['same_accuracy']}", flush=True)
    return out


# --------------------------------------------------------------------------- prepare speed


def _prepare_speed(work: Path, count: int, worker_counts: list[int]) -> dict[str, Any]:
    """``prepare`` of 256-px JPEGs to 128 px with 1, 2, ... worker processes."""
    from PIL import Image

    from nas.data import prepare

    # prepare decodes a small set in-process (starting workers would cost more): give each
    # worker at least four 64-image tasks, so the pool really runs
    count = max(count, 256 * max(worker_counts))
    src = work / "jpegs"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(count):
        cls = src / f"class_{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        # smooth shapes plus noise: closer to a photo's JPEG than pure noise
        a, b, c = rng.uniform(0.01, 0.08, size=3)
        base = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], axis=2) * 90 + 128
        image = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(cls / f"{i}.jpg", quality=90)
    out: dict[str, Any] = {"images": count, "from": 256, "to": 128}
    for workers in worker_counts:
        ticks: list[tuple[float, int]] = []

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "train":
                ticks.append((time.perf_counter(), done))

        result = prepare(src, work / f"p{workers}", resolution=128, workers=workers, progress=progress)
        rate = result.decoded / result.seconds
        # decoding alone: the train stage from its first chunk to its last (no start-up of
        # the worker processes, no listing, no checksums)
        (t0, d0), (t1, d1) = ticks[0], ticks[-1]
        steady = (d1 - d0) / (t1 - t0) if t1 > t0 else rate
        out[f"workers_{workers}"] = {"seconds": round(result.seconds, 2), "images_per_s": round(rate, 1),
                                     "decode_images_per_s": round(steady, 1), "per_worker": round(steady / workers, 1)}
        print(f"prepare 256 -> 128 px, {workers} worker(s): {rate:.0f} images/s overall, decoding {steady:.0f}/s "
              f"({steady / workers:.0f} per worker)", flush=True)
        shutil.rmtree(work / f"p{workers}")
    first = out[f"workers_{worker_counts[0]}"]["decode_images_per_s"]
    out["speedup"] = {w: round(out[f"workers_{w}"]["decode_images_per_s"] / first, 2) for w in worker_counts}
    return out


# --------------------------------------------------------------------------- report


def _machine() -> dict[str, Any]:
    mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()}
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "memory_bytes": mem.get("MemTotal"),
            "load_average": os.getloadavg(), "platform": platform.platform()}


def _report(results: dict[str, Any]) -> None:
    gb = 1e9
    rows: list[tuple[str, str, str]] = []
    if "memory" in results:
        small, big = results["memory"]["small"], results["memory"]["big"]
        sets = results["sets"]
        ratio = big["rss_anon"] / small["rss_anon"]
        rows += [
            (f"trial RssAnon, {sets['small']['bytes'] / gb:.2f} GB set", f"{small['rss_anon'] / gb:.3f} GB", ""),
            (f"trial RssAnon, {sets['big']['bytes'] / gb:.2f} GB set", f"{big['rss_anon'] / gb:.3f} GB",
             "target <= 1.5 GB: " + _ok(big["rss_anon"] <= 1.5 * gb)),
            ("big / small", f"{ratio:.3f}", "target <= 1.2: " + _ok(ratio <= 1.2)),
        ]
    if "shared" in results:
        s = results["shared"]
        single = results.get("memory", {}).get("big", {}).get("rss_anon", max(s["rss_anon"]))
        bound = s["set_bytes"] + s["trials"] * single
        rows.append((f"host growth, {s['trials']} trials", f"{s['host_growth'] / gb:.2f} GB",
                     f"target <= set + {s['trials']} x trial = {bound / gb:.2f} GB: " + _ok(s["host_growth"] <= bound)))
    if "throughput" in results:
        t = results["throughput"]
        rows += [("images/s in memory (32 px, CPU)", f"{t['in_memory']}", ""),
                 ("images/s mapped (32 px, CPU)", f"{t['mapped']}", f"ratio {t['ratio']}, target >= 0.9: "
                  + _ok(t["ratio"] >= 0.9))]
    if "prepare" in results:
        p = results["prepare"]
        for w in (int(k.split("_")[1]) for k in p if k.startswith("workers_")):
            r = p[f"workers_{w}"]
            rows.append((f"prepare 256->128 px, {w} worker(s)", f"{r['decode_images_per_s']} img/s",
                         f"{r['per_worker']} per worker (overall {r['images_per_s']}/s), target >= 150: "
                         + _ok(r["per_worker"] >= 150)))
    width = max(len(r[0]) for r in rows) if rows else 0
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")


def _ok(passed: bool) -> str:
    return "yes" if passed else "NO"


if __name__ == "__main__":
    sys.exit(main())
