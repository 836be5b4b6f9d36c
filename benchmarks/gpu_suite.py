"""On a real GPU: every CUDA path of nas run once, checked, timed; one JSON and one log.

Parts (``--parts``, default all, run in this order; seconds budgeted for one H200):

======  ====  ================================================================================
part    s     what it runs and checks
======  ====  ================================================================================
train   70    proxy training of the tiny space's baseline on learnable 32-px data, on CUDA
              (bf16 autocast + channels_last, data resident) and the same run in float32 on
              this machine's CPU: accuracies within 2 points; images/s of ``nas.train.train``
              vs a plain DataLoader loop (pinned memory; bf16 + channels_last) and vs that
              loop in float32 NCHW
measure 70    S (``measure_step_time``, fresh, ``cache=None``) five times each for B0 (batch
              128, 128 px) and the tiny baseline (batch 256, 32 px): spread of the medians
              <= 5 %; S vs the per-step wall time of a real training epoch (<= 10 %); the
              device lock file named by the GPU's UUID; peak memory
oom     35    a candidate far over the GPU's memory through ``nas.evaluate.evaluate`` ends
              FAIL "oom: ..."; the trainer's own OOM path too; memory released; then a small
              candidate trains to COMPLETE in the same process
big     35    EfficientNet-B0 and EfficientNetV2-S at 128 px: training images/s (bf16 +
              channels_last, data resident, a few hundred steps)
lock    45    S of one arch while 7 other processes train on the GPU vs alone: the exclusive
              device lock makes it wait, so the two agree within 5 %
pytest  45    ``pytest tests/test_cuda.py``
pack    130   16 candidates (32 px, 3 epochs) through ``backend: ray`` at gpus_per_trial 1,
              0.5, 0.25, 0.125: trials/hour (local worker processes if Ray is missing)
======  ====  ================================================================================

Each part runs in a child process of its own (an out-of-memory, a crash or a hang of one
part cannot stop the others) and is killed at 1.5x its budget; what a part measured is saved
as it goes, so a part cut off still reports what it got. No part starts once the suite's
deadline (480 s, ``--deadline``) leaves too little for it: ~7 minutes in all on an H200.
Writes ``gpu_suite.json`` and ``gpu_suite.log`` into ``--out`` and prints a short table
last. Without CUDA it writes "skipped: no CUDA" and exits 0, unless ``--cpu`` asks for the
CPU fallbacks (with ``--quick`` for tiny sizes: how the tests exercise it).

On the lent GPU machine (Python 3.12, no Optuna, no Ray): ``bash benchmarks/gpu_wheels.sh``
here first, carry ``.whl`` and install it there into ``/tmp/site`` (see that script).

    PYTHONUNBUFFERED=1 PYTHONPATH=$PWD python benchmarks/gpu_suite.py --out $OUT
    python benchmarks/gpu_suite.py --cpu --quick --parts train,measure --out /tmp/suite
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

# As the nas command does (nas/cli/__init__.py): OpenMP threads spin briefly, so processes
# sharing the CPU (trainers, Ray workers, the CPU reference) do not stall each other.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(1, str(HERE))

TINY = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 mb_r2_k3_s2_e4_c64_se0.25 head_c256"
ORDER = ("train", "measure", "oom", "big", "lock", "pytest", "pack")  # pack last: it may use what is left
BUDGET = {"train": 70, "measure": 70, "oom": 35, "big": 35, "lock": 45, "pack": 130, "pytest": 45}
QUICK_BUDGET = {name: 40 for name in ORDER}
SHORT_BUDGET = {"train": 30, "measure": 25, "oom": 20, "big": 15, "lock": 30, "pack": 60, "pytest": 30}
CUDA_ONLY = ("oom",)
LIMIT_FACTOR = 1.5          # a part is killed at this multiple of its budget
DEADLINE = 480.0            # seconds for the whole suite (the device call allows 600)
JSON_NAME, LOG_NAME = "gpu_suite.json", "gpu_suite.log"
ACCURACY_GAP = 0.02         # CUDA bf16 vs CPU float32, same run, one seed
SPREAD_LIMIT = 0.05         # (max - min) / median of five fresh S medians
EPOCH_LIMIT = 0.10          # |S - per-step wall of a real epoch| / per-step wall
LOCK_LIMIT = 0.05           # S beside 7 trainers (lock held) vs alone
PACK_LEVELS = (1.0, 0.125, 0.5, 0.25)  # the two ends first: what a cut-off part still shows


class Skip(Exception):
    """A part that cannot run here (no CUDA, no Ray): recorded as skipped, not as an error."""


def say(*parts: object) -> None:
    print(*parts, flush=True)


# --------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size a part uses; ``--quick`` shrinks them for a CPU run in seconds."""

    quick: bool = False
    pack_backend: str = "auto"  # pack: "ray", "local" (worker processes) or "auto" (ray when installed)
    short: bool = False         # about half the GPU time: smaller sets, 1 s S windows, shorter runs

    @property
    def epochs(self) -> int:                    # accuracy run (CUDA and CPU)
        return 1 if self.quick else 3

    @property
    def cpu_seconds(self) -> float:             # the CPU float32 reference's share
        return 4.0 if self.quick else 12.0 if self.short else 35.0

    @property
    def train_bounds(self) -> tuple[int, int]:  # training images of the accuracy run
        return (256, 1024) if self.quick else (2048, 8192) if self.short else (2048, 16384)

    @property
    def throughput_images(self) -> int:         # CIFAR-sized set for images/s
        return 512 if self.quick else 12800 if self.short else 25600

    def s_kwargs(self) -> dict[str, Any]:
        """``measure_step_time`` options: its defaults (what a search uses), or a few quick steps."""
        if self.quick:
            return {"min_time": 0.05, "repeats": 3, "warmup": 1}
        return {"min_time": 1.0} if self.short else {}

    @property
    def repeats(self) -> int:                   # fresh S measurements per setting
        return 5

    def s_settings(self) -> list[tuple[str, str, int, int, int]]:
        """(label, arch, batch, resolution, classes) of the S checks."""
        if self.quick:  # the tiny arch twice: B0 takes seconds a step on a small CPU
            return [("b0", TINY, 8, 16, 10), ("tiny", TINY, 16, 16, 10)]
        return [("b0", "efficientnet_b0", 128, 128, 1000), ("tiny", TINY, 256, 32, 10)]

    @property
    def epoch_steps(self) -> int:               # steps of the epoch S is compared with
        return 3 if self.quick else 32 if self.short else 48

    def big_settings(self) -> list[tuple[str, str, int, int]]:
        """(label, arch, batch, resolution) of the big-network throughput runs."""
        if self.quick:
            return [("b0", TINY, 8, 16)]
        return [("b0", "efficientnet_b0", 128, 128), ("v2s", "efficientnetv2_s", 128, 128)]

    @property
    def big_steps(self) -> int:                 # steps per epoch, two epochs timed
        return 2 if self.quick else 60 if self.short else 120

    @property
    def trainers(self) -> int:                  # processes training beside the lock test
        return 2 if self.quick else 7

    @property
    def trainer_seconds(self) -> float:         # how long each trains after its first epoch
        return 3.0 if self.quick else 8.0 if self.short else 16.0

    @property
    def pack_trials(self) -> int:
        return 3 if self.quick else 16

    @property
    def pack_images(self) -> int:               # per candidate: train + minival (1/5)
        return 320 if self.quick else 5120


# --------------------------------------------------------------------------- data


def learnable_images(n: int, *, resolution: int = 32, classes: int = 10, seed: int = 0,
                     signal: float = 48.0, noise: float = 64.0, shift: int = 4):
    """``n`` uint8 images ``(n, 3, R, R)`` whose class can be learned, with their labels.

    Each class has a smooth colour pattern (three random plane waves per channel). An image
    is its class's pattern at a random shift, blended with another class's pattern (weight
    ``a`` ~ U(0.45, 0.85) for its own), plus Gaussian noise. When ``a`` < 0.5 the other
    class dominates, so no model beats 87.5 %: accuracies land near that ceiling and a run
    that learns worse (a broken precision path) shows at once, while chance is 10 %.

    Returns:
        ``(x, y, templates)``: uint8 images, int64 labels (balanced), float32 patterns.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    side = resolution + 2 * shift
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / resolution
    templates = np.zeros((classes, 3, side, side), np.float32)
    for k in range(classes):
        for c in range(3):
            for _ in range(3):
                fx, fy = rng.uniform(-3, 3, 2)
                templates[k, c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    templates /= templates.std(axis=(1, 2, 3), keepdims=True)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = np.empty((n, 3, resolution, resolution), np.uint8)
    ch = np.arange(3)[None, :, None, None]
    span = np.arange(resolution)
    for start in range(0, n, 2048):
        idx = np.arange(start, min(n, start + 2048))
        m = len(idx)
        other = (y[idx] + rng.integers(1, classes, m)) % classes

        def shifted(labels):
            dy, dx = rng.integers(0, 2 * shift + 1, (2, m))
            rows, cols = dy[:, None] + span, dx[:, None] + span
            return templates[labels[:, None, None, None], ch, rows[:, None, :, None], cols[:, None, None, :]]

        a = rng.uniform(0.45, 0.85, m).astype(np.float32)[:, None, None, None]
        img = a * shifted(y[idx]) + (1 - a) * shifted(other)
        img = 128 + signal * img + noise * rng.standard_normal(img.shape, dtype=np.float32)
        x[idx] = np.clip(img, 0, 255).astype(np.uint8)
    return x, y, templates


def as_dataset(x, y, n_train: int, *, num_classes: int, name: str = "learnable", hflip: bool = True):
    """A :class:`nas.data.Dataset` of the first ``n_train`` rows (train) and the rest (val)."""
    import numpy as np
    import torch

    from nas.data import Dataset, Split
    from nas.data.dataset import ChannelSums

    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=np.int64)
    mean, std = ChannelSums.of(x[:n_train]).stats()
    return Dataset(name=name, train=Split.of(torch.from_numpy(x[:n_train]), torch.from_numpy(y[:n_train])),
                   val=Split.of(torch.from_numpy(x[n_train:]), torch.from_numpy(y[n_train:])),
                   num_classes=num_classes, hflip=hflip, mean=mean, std=std)


def random_dataset(n_train: int, n_val: int, resolution: int, num_classes: int, seed: int = 0):
    """Random uint8 images and labels (throughput only: what they show does not matter)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_val, 3, resolution, resolution), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n_train + n_val,), generator=g)
    return as_dataset(x.numpy(), y.numpy(), n_train, num_classes=num_classes, name="random")


def build(arch: str, num_classes: int, seed: int = 0):
    import torch

    import nas

    torch.manual_seed(seed)
    return nas.build_model(nas.resolve_arch(arch), num_classes=num_classes)


# --------------------------------------------------------------------------- figures


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart repeated measurements lie."""
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2] if len(ordered) % 2 else 0.5 * (ordered[len(ordered) // 2 - 1]
                                                                      + ordered[len(ordered) // 2])
    return (ordered[-1] - ordered[0]) / mid if mid > 0 else math.inf


def relative_gap(value: float, reference: float) -> float:
    return abs(value - reference) / reference if reference > 0 else math.inf


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time (trials running at once)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda t: (t[0], t[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def per_hour(count: int, seconds: float) -> float:
    return 3600.0 * count / seconds if seconds > 0 else 0.0


class Recorder:
    """What a part found: checks, figures, notes and a one-line summary, saved on every change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"checks": {}, "figures": {}, "notes": [], "summary": ""}

    def figure(self, key: str, value: Any) -> Any:
        self.data["figures"][key] = value
        self.save()
        return value

    def check(self, key: str, ok: bool, value: Any, limit: str) -> bool:
        self.data["checks"][key] = {"ok": bool(ok), "value": value, "limit": limit}
        say(f"  check {key}: {'ok' if ok else 'FAILED'} ({_short(value)}; {limit})")
        self.save()
        return bool(ok)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        say(f"  note: {text}")
        self.save()

    def summary(self, text: str) -> None:
        self.data["summary"] = text
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1, allow_nan=False))
        os.replace(tmp, self.path)


def _jsonable(value: Any) -> Any:
    """``value`` as strict JSON takes it: non-finite floats and unknown objects become text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    return str(value)


# --------------------------------------------------------------------------- parts


def _device(allow_cpu: bool):
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if not allow_cpu:
        raise Skip("needs CUDA")
    return torch.device("cpu")


def _first_conv_dtype(model) -> Callable[[], str | None]:
    """Records the dtype of the first conv's output in training: bf16 when autocast is really on."""
    import torch

    seen: dict[str, str] = {}
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def hook(module, inputs, output) -> None:
        if module.training and "dtype" not in seen:
            seen["dtype"] = str(output.dtype).removeprefix("torch.")

    conv.register_forward_hook(hook)
    return lambda: seen.get("dtype")


def part_train(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """Proxy training on the device vs float32 on the CPU; images/s vs plain loops."""
    import torch
    import torch.nn.functional as F

    from nas.data.feed import make_feed
    from nas.train import ProxyConfig, train
    from trainer_vs_plain import plain_train

    dev = _device(allow_cpu)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    batch, res = 128, 32

    # How fast this CPU trains the arch in float32, to size the reference run to its budget.
    net = build(TINY, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xb, yb = torch.randn(batch, 3, res, res), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    cpu_ips = batch / sorted(times[2:])[len(times[2:]) // 2]
    rec.figure("cpu_probe_images_per_second", round(cpu_ips, 1))
    low, high = sizes.train_bounds
    # an epoch is n training images plus n/4 validation images at a third of the cost
    n_train = int(sizes.cpu_seconds * cpu_ips / (sizes.epochs * (1 + 0.25 / 3) * 1.15))
    n_train = max(low, min(high, n_train // batch * batch))
    n_val = max(512 if sizes.quick else 2000, n_train // 4)
    n_all = max(n_train + n_val, sizes.throughput_images + sizes.throughput_images // 10)
    t0 = time.perf_counter()
    x, y, _ = learnable_images(n_all, resolution=res)
    rec.figure("data", {"train": n_train, "val": n_val, "throughput_images": sizes.throughput_images,
                        "generated_seconds": round(time.perf_counter() - t0, 2)})
    data = as_dataset(x[:n_train + n_val], y[:n_train + n_val], n_train, num_classes=10)
    config = ProxyConfig(epochs=sizes.epochs, resolution=res, batch_size=batch, seed=0)
    initial = build(TINY, 10)

    # the run on the device: bf16 autocast and channels_last by default on CUDA
    feed = make_feed(data, resolution=res, device=dev, batch_rows=2 * batch)
    rec.figure("feed", type(feed).__name__.lstrip("_"))
    if dev.type == "cuda":
        rec.check("data_on_device", type(feed).__name__ == "_Resident", type(feed).__name__.lstrip("_"),
                  "the whole set resident on the GPU")
    feed.close()
    warm = as_dataset(x[:2 * batch + 256], y[:2 * batch + 256], 2 * batch, num_classes=10)
    train(copy.deepcopy(initial), warm, dataclasses.replace(config, epochs=1), device=dev)  # CUDA init, kernels
    model = copy.deepcopy(initial)
    conv_dtype = _first_conv_dtype(model)
    ours = train(model, data, config, device=dev)
    weight = next(p for p in model.parameters() if p.ndim == 4)
    rec.figure("device_run", {"device": str(dev), "accuracy": ours.accuracy,
                              "epoch_accuracies": list(ours.epoch_accuracies),
                              "images_per_second": round(ours.images_per_second),
                              "seconds": round(ours.train_seconds, 2), "first_conv_output": conv_dtype(),
                              "weights_channels_last": weight.is_contiguous(memory_format=torch.channels_last)})
    if dev.type == "cuda":
        rec.check("bf16_autocast", conv_dtype() == "bfloat16", conv_dtype(), "first conv outputs bfloat16")
        rec.check("channels_last", weight.is_contiguous(memory_format=torch.channels_last),
                  weight.is_contiguous(memory_format=torch.channels_last), "conv weights channels_last")
    del model

    # images/s: our trainer vs the plain DataLoader loop (bf16 + CL) vs that loop in float32 NCHW
    n_tp = sizes.throughput_images
    tp_data = as_dataset(x[:n_tp + n_tp // 10], y[:n_tp + n_tp // 10], n_tp, num_classes=10)
    tp_config = dataclasses.replace(config, epochs=1 if sizes.quick else 2)
    fast = train(copy.deepcopy(initial), tp_data, tp_config, device=dev)
    rows = {"nas.train": round(fast.images_per_second)}
    plain_config = dataclasses.replace(config, epochs=1)
    # the plain loops are bound by their per-sample Python work: half the images show their rate
    n_plain = max(2 * batch, n_tp // 2 // batch * batch)
    plain_data = as_dataset(x[:n_plain + n_plain // 10], y[:n_plain + n_plain // 10], n_plain, num_classes=10)
    for label, bf16, cl in (("plain_bf16_channels_last", None, None), ("plain_float32_nchw", False, False)):
        plain_train(copy.deepcopy(initial), warm, plain_config, dev, bfloat16=bf16, channels_last=cl)  # warm
        result = plain_train(copy.deepcopy(initial), plain_data, plain_config, dev, bfloat16=bf16, channels_last=cl)
        rows[label] = round(result["images_per_second"])
        rec.figure("images_per_second", dict(rows))
    rec.figure("speedup_over_plain", {k: round(rows["nas.train"] / v, 2) for k, v in rows.items() if k != "nas.train"})
    # torch's defaults: "float32" convolutions may run as TF32 on the GPU's matrix units
    rec.figure("tf32", {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32})

    # the same run in float32 on this machine's CPU
    t0 = time.perf_counter()
    reference = train(copy.deepcopy(initial), data, dataclasses.replace(config, dtype="float32"), device="cpu")
    rec.figure("cpu_float32_run", {"threads": torch.get_num_threads(), "accuracy": reference.accuracy,
                                   "epoch_accuracies": list(reference.epoch_accuracies),
                                   "images_per_second": round(reference.images_per_second),
                                   "seconds": round(time.perf_counter() - t0, 2)})
    gap = abs(ours.accuracy - reference.accuracy)
    rec.check("accuracy_vs_cpu_float32", gap <= ACCURACY_GAP,
              {"device": round(ours.accuracy, 4), "cpu": round(reference.accuracy, 4), "gap": round(gap, 4)},
              f"gap <= {ACCURACY_GAP:.2f} (chance 0.10, ceiling 0.875)")
    rec.summary(f"acc {ours.accuracy:.3f} vs cpu {reference.accuracy:.3f}; img/s ours {rows['nas.train']:,} "
                f"plain {rows['plain_bf16_channels_last']:,} f32 {rows['plain_float32_nchw']:,}")


def part_measure(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """S: five fresh measurements per setting, S vs a real epoch, the UUID lock, peak memory."""
    import torch

    from nas.measure import measure_step_time
    from nas.train import ProxyConfig, train

    dev = _device(allow_cpu)
    lock_dir = Path(tempfile.mkdtemp(prefix="nas-locks-"))
    summary = []
    for label, arch, batch, res, classes in sizes.s_settings():
        model = build(arch, classes)
        medians, rows = [], []
        for _ in range(sizes.repeats):
            st = measure_step_time(model, batch=batch, resolution=res, num_classes=classes, device=dev,
                                   cache=None, lock_dir=lock_dir, **sizes.s_kwargs())
            say(f"  {label}: S {st.step_time * 1e3:.3f} ms (p10 {st.step_time_p10 * 1e3:.3f}, "
                f"p90 {st.step_time_p90 * 1e3:.3f}, {st.repeats} steps)")
            medians.append(st.step_time)
            rows.append({"median_ms": round(st.step_time * 1e3, 3), "p10_ms": round(st.step_time_p10 * 1e3, 3),
                         "p90_ms": round(st.step_time_p90 * 1e3, 3), "repeats": st.repeats, "busy": st.busy,
                         "exclusive": st.exclusive, "peak_memory_mib": None if st.peak_memory is None
                         else round(st.peak_memory / 2**20, 1),
                         "inference_ms": round(st.inference_latency * 1e3, 3)})
            rec.figure(f"{label}_measurements", rows)
        rec.figure(f"{label}_setting", {"arch": arch, "batch": batch, "resolution": res, "classes": classes,
                                        "device": st.device})
        s = sorted(medians)[len(medians) // 2]
        rec.check(f"{label}_spread_of_medians", spread(medians) <= SPREAD_LIMIT, round(spread(medians), 4),
                  f"(max - min) / median <= {SPREAD_LIMIT:.2f}")
        rec.check(f"{label}_exclusive", all(r["exclusive"] for r in rows), all(r["exclusive"] for r in rows),
                  "measured holding the device lock")
        if dev.type == "cuda":
            peaks = [r["peak_memory_mib"] for r in rows]
            total = torch.cuda.get_device_properties(dev).total_memory / 2**20
            rec.check(f"{label}_peak_memory", all(p is not None and 0 < p < total for p in peaks),
                      peaks[0], f"0 < peak < {total:.0f} MiB")

        # the per-step wall time of a real epoch at the same batch, resolution, dtype and format
        steps = sizes.epoch_steps
        data = random_dataset(batch * steps, batch, res, classes)
        config = ProxyConfig(epochs=1, resolution=res, batch_size=batch, seed=0, data_on_device=True)
        epoch = {}
        benchmark = torch.backends.cudnn.benchmark
        try:
            for mode in ("trainer_default", "cudnn_benchmark"):
                torch.backends.cudnn.benchmark = benchmark if mode == "trainer_default" else True
                train(build(arch, classes), data, config, device=dev)  # warm: kernels, allocator
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                result = train(build(arch, classes), data, config, device=dev)
                epoch[mode] = {"step_ms": round(batch / result.images_per_second * 1e3, 3),
                               "gap": round(relative_gap(s, batch / result.images_per_second), 4)}
                if dev.type == "cuda":
                    epoch[mode]["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                rec.figure(f"{label}_epoch", dict(epoch, S_ms=round(s * 1e3, 3), cudnn_benchmark_default=benchmark))
                say(f"  {label}: epoch step {epoch[mode]['step_ms']:.3f} ms ({mode}); S {s * 1e3:.3f} ms")
        finally:
            torch.backends.cudnn.benchmark = benchmark
        gap = epoch["trainer_default"]["gap"]
        rec.check(f"{label}_S_vs_epoch", gap <= EPOCH_LIMIT,
                  {"S_ms": round(s * 1e3, 3), "epoch_step_ms": epoch["trainer_default"]["step_ms"], "gap": gap},
                  f"|S - epoch step| / epoch step <= {EPOCH_LIMIT:.2f}")
        summary.append(f"{label} S {s * 1e3:.2f} ms spread {spread(medians) * 100:.1f}% vs epoch {gap * 100:.1f}%")
        del model

    # the lock file: named by the GPU's UUID (the same GPU under any CUDA_VISIBLE_DEVICES)
    names = sorted(p.name for p in lock_dir.iterdir())
    rec.figure("lock_files", names)
    if dev.type == "cuda":
        uuid = str(torch.cuda.get_device_properties(dev).uuid)
        smi = _nvidia_smi("uuid")
        rec.figure("gpu_uuid", {"torch": uuid, "nvidia_smi": smi})
        rec.check("lock_named_by_uuid", any(uuid in n for n in names) and bool(uuid),
                  names, f"a lock file name contains the GPU UUID {uuid}")
        if smi:
            rec.check("uuid_matches_nvidia_smi", smi.removeprefix("GPU-") == uuid.removeprefix("GPU-"),
                      {"torch": uuid, "nvidia_smi": smi}, "the UUID torch reports is the GPU's")
    else:
        rec.check("lock_file", "nas-device-cpu.lock" in names, names, "nas-device-cpu.lock")
    shutil.rmtree(lock_dir, ignore_errors=True)
    rec.summary("; ".join(summary))


def part_oom(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """A candidate that cannot fit ends FAIL "oom", its memory is released, a small one then trains."""
    import torch

    from nas import RewardSpec, resolve_arch
    from nas.evaluate import evaluate
    from nas.train import CandidateFailure, ProxyConfig, train

    dev = _device(False)
    lock_dir = Path(tempfile.mkdtemp(prefix="nas-locks-"))
    x, y, _ = learnable_images(3000 if not sizes.quick else 640)
    data = as_dataset(x, y, len(x) * 4 // 5, num_classes=10)

    # Warm the libraries first (cuBLAS keeps a workspace from the caching allocator), so that
    # what is allocated before and after the failure can be compared exactly.
    warm = build(TINY, 10).to(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        warm(torch.randn(8, 3, 32, 32, device=dev)).float().sum().backward()
    del warm
    gc.collect()
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    total = torch.cuda.get_device_properties(dev).total_memory
    rec.figure("memory_before", {"allocated_mib": round(base / 2**20, 1), "total_gib": round(total / 2**30, 1)})

    def released(label: str) -> None:
        # as soon as the failure is handled, and after a collection (reference cycles of the
        # exception's frames are freed only then; Python's collector runs on its own soon after)
        now = torch.cuda.memory_allocated(dev)
        gc.collect()
        after_gc = torch.cuda.memory_allocated(dev)
        torch.cuda.empty_cache()
        rec.figure(f"memory_after_{label}", {"more_than_before_mib": round((now - base) / 2**20, 2),
                                             "after_gc_more_than_before_mib": round((after_gc - base) / 2**20, 2),
                                             "reserved_after_empty_cache_mib":
                                                 round(torch.cuda.memory_reserved(dev) / 2**20, 1)})
        if now - base > 2**20 >= after_gc - base:
            rec.note(f"{label}: {(now - base) / 2**20:.0f} MiB stayed allocated until gc.collect() "
                     "(reference cycles through the exception's frames)")
        rec.check(f"{label}_memory_released", after_gc - base <= 2**20, round((after_gc - base) / 2**20, 2),
                  "memory_allocated back to where it was (<= 1 MiB more, after gc.collect())")

    # 1. through nas.evaluate.evaluate (S is measured first: the failure comes from there)
    attempts = [("efficientnetv2_l", 512, 384), ("efficientnetv2_xl", 1024, 512)]
    for arch, batch, res in attempts:
        proxy = ProxyConfig(epochs=1, resolution=res, batch_size=batch, seed=0)
        t0 = time.perf_counter()
        result = evaluate(resolve_arch(arch), data, proxy, RewardSpec(), device=dev, cache=None, lock_dir=lock_dir)
        rec.figure(f"evaluate_{arch}", {"batch": batch, "resolution": res, "state": result.state,
                                        "reason": result.reason, "seconds": round(time.perf_counter() - t0, 1)})
        if result.state == "FAIL" and (result.reason or "").startswith("oom"):
            break
        rec.note(f"{arch} at batch {batch}, {res} px did not fail 'oom' ({result.state}); trying a bigger one")
    rec.check("evaluate_oom", result.state == "FAIL" and (result.reason or "").startswith("oom"),
              {"state": result.state, "reason": (result.reason or "")[:160]}, "FAIL with a reason starting 'oom'")
    released("evaluate_oom")

    # 2. the trainer's own guard (an OOM in an epoch: data feed and optimizer let go)
    model = build(attempts[0][0], 10)
    try:
        train(model, data, ProxyConfig(epochs=1, resolution=attempts[0][2], batch_size=attempts[0][1], seed=0),
              device=dev)
        reason = "no failure"
    except CandidateFailure as failure:
        reason = failure.reason
    rec.check("train_oom", reason.startswith("oom"), reason[:160], "CandidateFailure reason starting 'oom'")
    del model
    released("train_oom")

    # 3. the same process then trains a small candidate normally
    small = evaluate(resolve_arch(TINY), data, ProxyConfig(epochs=3, resolution=32, batch_size=128, seed=0),
                     RewardSpec(), device=dev, cache=None, lock_dir=lock_dir)
    rec.figure("small_candidate", {"state": small.state, "reason": small.reason, "accuracy": small.accuracy,
                                   "step_time_ms": None if small.step_time is None else round(small.step_time * 1e3, 3),
                                   "peak_memory_mib": None if small.peak_memory is None
                                   else round(small.peak_memory / 2**20, 1)})
    rec.check("small_after_oom", small.state == "COMPLETE" and (small.accuracy or 0) > 0.2,
              {"state": small.state, "accuracy": small.accuracy}, "COMPLETE, accuracy above chance")
    released("small")
    shutil.rmtree(lock_dir, ignore_errors=True)
    rec.summary(f"evaluate {result.state} {(result.reason or '')[:40]}...; train {reason[:20]}...; "
                f"small {small.state} acc {small.accuracy}")


def part_big(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """EfficientNet-B0 and EfficientNetV2-S at the ImageNet proxy resolution: training images/s."""
    from nas.cost import model_cost
    from nas import resolve_arch
    from nas.train import ProxyConfig, train

    dev = _device(allow_cpu)
    summary = []
    datasets: dict[tuple[int, int], Any] = {}
    for label, arch, batch, res in sizes.big_settings():
        key = (batch, res)
        if key not in datasets:
            datasets.clear()
            datasets[key] = random_dataset(batch * sizes.big_steps, batch, res, 1000)
        data = datasets[key]
        config = ProxyConfig(epochs=2, resolution=res, batch_size=batch, seed=0, data_on_device=True)
        warm = random_dataset(batch * 2, batch, res, 1000, seed=1)
        train(build(arch, 1000), warm, dataclasses.replace(config, epochs=1), device=dev)
        result = train(build(arch, 1000), data, config, device=dev)
        macs = model_cost(resolve_arch(arch), res, 1000).macs
        # forward + backward ~ 3x the forward's multiply-adds, 2 FLOP each
        tflops = 6 * macs * result.images_per_second / 1e12
        rec.figure(label, {"arch": arch, "batch": batch, "resolution": res, "steps": 2 * sizes.big_steps,
                           "images_per_second": round(result.images_per_second),
                           "step_ms": round(batch / result.images_per_second * 1e3, 2),
                           "model_tflops": round(tflops, 1)})
        summary.append(f"{label} {result.images_per_second:,.0f} img/s")
    rec.summary("; ".join(summary))


def part_lock(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """S while other processes train on the device (they hold it shared) vs alone."""
    import nas
    from nas.measure import measure_step_time

    dev = _device(allow_cpu)
    lock_dir = Path(tempfile.mkdtemp(prefix="nas-locks-"))
    signals = Path(tempfile.mkdtemp(prefix="nas-trainers-"))
    batch, res = (16, 16) if sizes.quick else (256, 32)
    model = build(TINY, 10)

    def measure(exclusive: bool):
        st = measure_step_time(model, batch=batch, resolution=res, num_classes=10, device=dev, cache=None,
                               lock_dir=lock_dir, exclusive=exclusive, **sizes.s_kwargs())
        say(f"  S {'with' if exclusive else 'without'} the lock: {st.step_time * 1e3:.3f} ms")
        return st

    t0 = time.time()
    alone = measure(True)
    alone_s = time.time() - t0
    rec.figure("alone", {"S_ms": round(alone.step_time * 1e3, 3), "busy": alone.busy, "call_s": round(alone_s, 2)})
    space = nas.load_space("tiny")
    archs = [str(space.sample(seed)) for seed in range(1, sizes.trainers + 1)]
    procs = []
    for i, arch in enumerate(archs):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "trainer", "--lock-dir", str(lock_dir),
               "--signals", str(signals), "--index", str(i), "--arch", arch, "--seconds", str(sizes.trainer_seconds),
               "--device", dev.type] + (["--quick"] if sizes.quick else [])
        procs.append(subprocess.Popen(cmd))  # output to this part's log
    try:
        ready_by = time.time() + (60 if sizes.quick else 90)
        while time.time() < ready_by and len(list(signals.glob("ready-*"))) < len(procs):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a trainer exited before it was ready")
            time.sleep(0.1)
        ready = len(list(signals.glob("ready-*")))
        rec.figure("trainers_ready", ready)
        if ready < len(procs):
            raise RuntimeError(f"only {ready} of {len(procs)} trainers started training in time")
        busy = measure(False)  # no lock: measured while they train, to show what the lock prevents
        t_call = time.time()
        held = measure(True)   # waits for every trainer to leave the device, then measures alone
        t_return = time.time()
        for p in procs:
            p.wait(timeout=120)
        done = [float(f.read_text()) for f in signals.glob("done-*")]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rec.figure("beside_trainers_without_lock", {"S_ms": round(busy.step_time * 1e3, 3), "busy": busy.busy,
                                                "ratio_to_alone": round(busy.step_time / alone.step_time, 3)})
    rec.figure("beside_trainers_with_lock", {"S_ms": round(held.step_time * 1e3, 3), "busy": held.busy,
                                             "waited_s": round(max(done) - t_call, 2) if done else None,
                                             "call_s": round(t_return - t_call, 2)})
    gap = relative_gap(held.step_time, alone.step_time)
    rec.check("S_with_lock_vs_alone", gap <= LOCK_LIMIT,
              {"alone_ms": round(alone.step_time * 1e3, 3), "with_lock_ms": round(held.step_time * 1e3, 3),
               "gap": round(gap, 4)}, f"gap <= {LOCK_LIMIT:.2f}")
    # The trainers were still on the device when S was asked for, and S was measured after the last
    # one left: its call ended at least ~ one measurement's duration after that.
    last = max(done) if done else math.inf
    rec.check("lock_waited_for_trainers", len(done) == len(procs) and t_call < last
              and t_return - last >= 0.7 * alone_s,
              {"trainers_done": len(done), "trainers_busy_at_call": t_call < last,
               "measured_after_last_s": round(t_return - last, 2), "one_measurement_s": round(alone_s, 2)},
              "asked while trainers ran; measured after the last one left")
    shutil.rmtree(lock_dir, ignore_errors=True)
    shutil.rmtree(signals, ignore_errors=True)
    rec.summary(f"S alone {alone.step_time * 1e3:.2f} ms, with lock {held.step_time * 1e3:.2f} ms "
                f"({gap * 100:.1f}%), no lock {busy.step_time * 1e3:.2f} ms")


def trainer_main(args: argparse.Namespace) -> int:
    """One of the lock test's trainers: hold the device shared and train until told time is up."""
    import torch

    from nas.measure import shared_device
    from nas.train import ProxyConfig, train

    torch.set_num_threads(1 if args.quick else 2)
    signals = Path(args.signals)
    res = 16 if args.quick else 32
    x, y, _ = learnable_images(200 if args.quick else 4096, resolution=res, seed=args.index + 1)
    data = as_dataset(x, y, len(x) * 4 // 5, num_classes=10)
    config = ProxyConfig(epochs=10_000, resolution=res, batch_size=32 if args.quick else 128, seed=args.index)
    state = {"end": None, "epochs": 0}

    class TimeUp(Exception):
        pass

    def on_epoch(epoch: int, accuracy: float) -> None:
        state["epochs"] = epoch
        if state["end"] is None:
            state["end"] = time.time() + args.seconds
            (signals / f"ready-{args.index}").write_text(str(time.time()))
        if time.time() >= state["end"]:
            raise TimeUp()

    with shared_device(args.device, lock_dir=args.lock_dir):
        try:
            train(build(args.arch, 10), data, config, device=args.device, on_epoch=on_epoch)
        except TimeUp:
            pass
    # written after the shared lock is let go: the measurement may start from here on
    (signals / f"done-{args.index}").write_text(repr(time.time()))
    say(f"  trainer {args.index}: {state['epochs']} epochs")
    return 0


def part_pack(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """The same candidates through backend ray at several GPU fractions: trials/hour."""
    import numpy as np
    import optuna

    from nas.experiment import from_dict
    from nas.measure import StepTimeCache, measure_step_time
    from nas.runtime import RuntimeOptions
    from nas.search import run_search
    from nas.study import ledger_row

    dev = _device(allow_cpu)
    _export_pythonpath()  # Ray's worker processes import nas through it
    work = Path(tempfile.mkdtemp(prefix="nas-pack-"))
    x, y, _ = learnable_images(sizes.pack_images, seed=7)
    npz = work / "learnable32.npz"
    np.savez(npz, x=x, y=y, hflip=np.array(True))
    levels = PACK_LEVELS if dev.type == "cuda" else (0.0,)
    backend = sizes.pack_backend
    if backend == "auto":
        import importlib.util

        backend = "ray" if importlib.util.find_spec("ray") is not None else "local"
        if backend == "local":
            rec.note("Ray is not installed: the candidates run in local worker processes (workers: N) instead")
    if backend == "ray":
        from nas.backends.ray import _connect, _import_ray

        ray = _import_ray(local=True)  # nas's own way in (single node, loopback); RayMissing names the fix
    rec.figure("backend", backend if backend == "ray" else "local worker processes (workers: N), not Ray")

    def experiment(level: float, kind: str):
        concurrent = 2 if level == 0 else max(1, round(1 / level))
        data = {"name": "pack", "space": "tiny", "dataset": "npz", "data_dir": str(npz),
                "proxy": {"epochs": 1 if sizes.quick else 3, "resolution": 32,
                          "batch_size": 64 if sizes.quick else 128},
                "reward": "efficientnetv2", "controller": "random", "trials": sizes.pack_trials, "seed": 0,
                "backend": kind}
        if kind == "ray":
            data["ray"] = {"gpus_per_trial": level, "cpus_per_trial": 1, "max_concurrent": concurrent}
        elif kind == "local":
            data["workers"] = concurrent
            data["device"] = dev.type
        else:
            data["simulated"] = {"workers": 1}
        return from_dict(data, source="gpu_suite")

    # S is measured once per candidate before the runs (cached), so trials/hour shows how training
    # packs; measuring S exclusively for every new candidate is timed apart, and told below.
    cache_dir, lock_dir = work / "cache", work / "locks"
    lock_dir.mkdir()
    runtime = RuntimeOptions(cache_dir=cache_dir, lock_dir=lock_dir)
    predicted = run_search(experiment(levels[0], "simulated"), work / "predict", fresh=True,
                           runtime=runtime, log=lambda m: None)
    archs = [ledger_row(t)["arch"] for t in _trials(predicted)]
    cache = StepTimeCache(cache_dir / "step_times.json")
    proxy = experiment(levels[0], "simulated").proxy
    t0 = time.perf_counter()
    prefill = {}
    options = sizes.s_kwargs() or {"min_time": 0.3}
    for arch in archs:
        prefill[arch] = measure_step_time(
            build(arch, 10), batch=proxy.batch_size, resolution=proxy.resolution, num_classes=10, device=dev,
            dtype=proxy.dtype, channels_last=proxy.channels_last, cache=cache, cache_key=arch, lock_dir=lock_dir,
            **options).step_time
    rec.figure("S_prefill", {"candidates": len(archs), "seconds": round(time.perf_counter() - t0, 1),
                             "options": options, "note": "a search measures each new candidate with "
                                                         "measure_step_time's defaults (3 s), holding the GPU alone"})

    started = False
    if backend == "ray":
        started = _connect(ray, experiment(levels[0], "ray").ray, say)
        resources = ray.cluster_resources()
        if dev.type == "cuda" and resources.get("GPU", 0) < 1:
            # trials asking for a GPU would wait forever: say so, and go on with the GPU named
            rec.note(f"Ray started by nas sees no GPU ({resources}); restarted with num_gpus given")
            resources = _restart_ray_with_gpus(ray)
        rec.figure("ray", {"version": ray.__version__, "resources": {k: v for k, v in resources.items()
                                                                     if k in ("CPU", "GPU", "memory")}})
    table = {}
    try:
        for level in levels:
            exp = experiment(level, backend)
            t0 = time.perf_counter()
            try:
                run = run_search(exp, work / f"run-{level}", fresh=True, runtime=runtime,
                                 log=lambda m: say(f"  {m}"))
            except Exception as exc:  # this level's failure: the next level still runs
                traceback.print_exc()
                table[str(level)] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                rec.figure("levels", table)
                rec.check(f"complete_at_{level}", False, table[str(level)]["error"], "the search ran")
                continue
            wall = time.perf_counter() - t0
            trials = _trials(run)
            rows = [ledger_row(t) for t in trials]
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in trials
                     if t.datetime_start and t.datetime_complete]
            steady = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
            entry = {"complete": len(done), "trials": len(trials), "wall_s": round(wall, 1),
                     "trials_per_hour": round(per_hour(len(done), wall)),
                     "trials_per_hour_steady": round(per_hour(len(done), steady)),
                     "most_at_once": max_overlap(spans),
                     "mean_trial_s": round(sum(e - s for s, e in spans) / max(1, len(spans)), 2),
                     "mean_evaluation_s": round(sum(r["seconds"] or 0 for r in rows) / max(1, len(rows)), 2),
                     "same_candidates": sorted(r["arch"] for r in rows) == sorted(archs),
                     "S_from_cache": sum(1 for r in rows if r["step_time"] is not None
                                         and r["step_time"] == prefill.get(r["arch"])),
                     "failed": [(r["number"], r["reason"]) for r in rows if r["state"] != "COMPLETE"][:4],
                     "mean_accuracy": round(sum(r["accuracy"] or 0 for r in rows) / max(1, len(rows)), 4)}
            table[str(level)] = entry
            rec.figure("levels", table)
            rec.check(f"complete_at_{level}", len(done) == sizes.pack_trials, entry["failed"] or len(done),
                      f"all {sizes.pack_trials} trials COMPLETE")
    finally:
        if started:
            ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    rec.summary(f"{backend}: " + ", ".join(f"{lv} GPU {e['trials_per_hour']:,}/h (x{e['most_at_once']})"
                                          if "error" not in e else f"{lv} GPU error" for lv, e in table.items()))


def _restart_ray_with_gpus(ray) -> dict:
    """Ray as nas starts it (single node, loopback, no dashboard), with this machine's GPUs named."""
    import logging

    import torch

    from nas.backends.ray import _OBJECT_STORE_BYTES, _single_node

    ray.shutdown()
    with _single_node():
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=_OBJECT_STORE_BYTES, logging_level=logging.ERROR, log_to_driver=False,
                 num_gpus=torch.cuda.device_count())
    return ray.cluster_resources()


def _trials(run) -> list:
    return sorted(run.open_study().get_trials(deepcopy=False), key=lambda t: t.number)


def _export_pythonpath() -> None:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + [str(ROOT)])


def part_pytest(rec: Recorder, sizes: Sizes, allow_cpu: bool) -> None:
    """The CUDA tests (they skip without CUDA)."""
    _export_pythonpath()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=BUDGET["pytest"] * 1.3)
    print(proc.stdout[-6000:], flush=True)
    last = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:] or [""]
    rec.figure("pytest", {"returncode": proc.returncode, "last_line": last[0][-200:]})
    rec.check("pytest_cuda", proc.returncode == 0, last[0][-120:], "exit 0")
    rec.summary(last[0][-90:])


PARTS: dict[str, Callable[[Recorder, Sizes, bool], None]] = {
    "train": part_train, "measure": part_measure, "oom": part_oom, "big": part_big,
    "lock": part_lock, "pack": part_pack, "pytest": part_pytest,
}


# --------------------------------------------------------------------------- driver


def _nvidia_smi(field: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None


def environment() -> dict[str, Any]:
    """What this machine is (without creating a CUDA context in the driver process)."""
    import importlib.util

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                           "cpu_count": os.cpu_count(), "machine": platform.machine()}
    for name in ("optuna", "ray", "numpy"):
        spec = importlib.util.find_spec(name)
        env[name] = None
        if spec is not None:
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                env[name] = version(name)
    if env["cuda_available"]:
        env["gpu"] = _nvidia_smi("name,uuid,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit")
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.log")
    parser.add_argument("--parts", default=",".join(ORDER), help=f"comma-separated, of {', '.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU)")
    parser.add_argument("--short", action="store_true",
                        help="about half the GPU time (smaller sets, 1 s S windows): for a short device lease")
    parser.add_argument("--cpu", action="store_true", help="without CUDA, run the CPU fallbacks instead of skipping")
    parser.add_argument("--deadline", type=float, default=None,
                        help=f"seconds for the whole suite (default {DEADLINE:.0f}; --quick: 300)")
    parser.add_argument("--pack-backend", choices=["auto", "ray", "local"], default="auto",
                        help="pack: Ray Tune, local worker processes, or Ray when it is installed (default)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every part's time budget (a slower machine; parts are killed at 1.5x)")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests: no child processes
    parser.add_argument("--child", choices=ORDER, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in names if p not in ORDER]
    if unknown or not names:
        parser.error(f"--parts: unknown part {', '.join(unknown) or '(none given)'} (choose from {', '.join(ORDER)})")
    args.selected = [p for p in names if p in ORDER] if args.parts else list(ORDER)
    if args.deadline is None:
        args.deadline = 300.0 if args.quick else 140.0 if args.short else DEADLINE
    return args


def child_main(args: argparse.Namespace) -> int:
    """Run one part in this process and save what it found to ``--result``."""
    rec = Recorder(args.result)
    t0 = time.perf_counter()
    try:
        if args.child in CUDA_ONLY:
            import torch

            if not torch.cuda.is_available():
                raise Skip("needs CUDA")
        PARTS[args.child](rec, Sizes(args.quick, args.pack_backend, args.short), args.cpu)
    except Skip as skip:
        rec.data["skipped"] = str(skip)
    except BaseException as exc:  # recorded: the suite goes on with the next part
        rec.data["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        rec.data["traceback"] = traceback.format_exc()[-3000:]
        traceback.print_exc()
    rec.data["seconds"] = round(time.perf_counter() - t0, 1)
    rec.save()
    return 0


Runner = Callable[[str, argparse.Namespace, float, Path], dict[str, Any]]


def run_child(name: str, args: argparse.Namespace, limit: float, log: Path) -> dict[str, Any]:
    """One part in a child process of its own, killed (with its children) at ``limit`` seconds."""
    result = Path(tempfile.mkdtemp(prefix="gpu-suite-")) / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(result), "--out",
           str(args.out), "--pack-backend", args.pack_backend] + (["--quick"] if args.quick else []) \
        + (["--short"] if args.short else []) \
        + (["--cpu"] if args.cpu else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    timed_out = False
    with open(log, "a") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(result.read_text())
    shutil.rmtree(result.parent, ignore_errors=True)
    if timed_out:
        data["error"] = f"timed out after {limit:.0f} s (killed; what it had measured is kept)"
    elif proc.returncode and "error" not in data:
        data["error"] = f"the part's process exited {proc.returncode} ({_signal_name(proc.returncode)}); see the log"
    return data


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _signal_name(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return "error"


def run_in_process(name: str, args: argparse.Namespace, limit: float, log: Path) -> dict[str, Any]:
    """One part in this process (tests): no isolation, no time limit."""
    rec = Recorder(None)
    t0 = time.perf_counter()
    try:
        PARTS[name](rec, Sizes(args.quick, args.pack_backend, args.short), args.cpu)
    except Skip as skip:
        rec.data["skipped"] = str(skip)
    except Exception as exc:
        rec.data["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    rec.data["seconds"] = round(time.perf_counter() - t0, 1)
    return rec.data


def status_of(data: dict[str, Any]) -> str:
    if data.get("skipped"):
        return f"skipped: {data['skipped']}"
    if data.get("error"):
        return "error"
    if any(not c["ok"] for c in data.get("checks", {}).values()):
        return "fail"
    return "ok"


def run_suite(args: argparse.Namespace, runner: Runner | None = None) -> dict[str, Any]:
    """Every selected part in order, each within its budget; the JSON is rewritten after each."""
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / LOG_NAME
    json_path = args.out / JSON_NAME
    start = time.perf_counter()
    report: dict[str, Any] = {"suite": "gpu_suite", "status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "args": {"parts": args.selected, "quick": args.quick, "cpu": args.cpu,
                                       "deadline_s": args.deadline, "pack_backend": args.pack_backend,
                                       "budget_scale": args.budget_scale},
                              "environment": environment(), "parts": {}}

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["failed_checks"] = [f"{part}.{name}" for part, data in report["parts"].items()
                                   for name, c in data.get("checks", {}).items() if not c["ok"]]
        json_path.write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False) + "\n")

    def both(line: str) -> None:
        say(line)
        with open(log, "a") as sink:
            sink.write(line + "\n")

    with open(log, "w") as sink:
        sink.write(f"gpu_suite {time.strftime('%Y-%m-%d %H:%M:%S')} {json.dumps(report['environment'])}\n")
    env = report["environment"]
    if not env["cuda_available"] and not args.cpu:
        report["status"] = "skipped: no CUDA"
        write()
        both(f"gpu_suite: skipped: no CUDA (torch {env['torch']}); nothing was run. Wrote {json_path}")
        return report
    both(f"gpu_suite: {env.get('gpu') or 'CPU only'}; torch {env['torch']} (CUDA {env['torch_cuda']}); "
         f"ray {env['ray']}; optuna {env['optuna']}; {env['cpu_count']} CPUs")
    runner = runner or (run_in_process if args.in_process else run_child)
    budgets = QUICK_BUDGET if args.quick else SHORT_BUDGET if args.short else BUDGET
    for name in args.selected:
        left = args.deadline - (time.perf_counter() - start)
        budget = budgets[name] * args.budget_scale
        if left < 0.6 * budget:
            data = {"skipped": f"out of time ({left:.0f} s left of the suite's {args.deadline:.0f}, "
                               f"the part needs ~{budget:.0f} s)"}
        else:
            both(f"[{name}] starting (budget {budget:.0f} s, limit {min(left, LIMIT_FACTOR * budget):.0f} s)")
            with open(log, "a") as sink:
                sink.write(f"----- {name} -----\n")
            t0 = time.perf_counter()
            try:
                data = runner(name, args, min(left, LIMIT_FACTOR * budget), log)
            except Exception as exc:  # the runner itself broke: still record and go on
                data = {"error": f"{type(exc).__name__}: {exc}"}
            data.setdefault("seconds", round(time.perf_counter() - t0, 1))
        data["status"] = status_of(data)
        report["parts"][name] = data
        write()
        both(f"[{name}] {data['status']} in {data.get('seconds', 0):.0f} s: "
             f"{data.get('summary') or data.get('error') or data.get('skipped') or ''}"[:300])
    report["status"] = "ran"
    write()
    print_table(report)
    say(f"wrote {json_path} and {log}")
    return report


def print_table(report: dict[str, Any]) -> None:
    """The short table the device tool's 12,000 characters of output end with."""
    say("")
    say(f"{'part':8} {'status':8} {'s':>5}  result")
    for name, data in report["parts"].items():
        status = data["status"] if not data["status"].startswith("skipped") else "skipped"
        text = data.get("summary") or data.get("error") or data.get("skipped") or ""
        say(f"{name:8} {status:8} {data.get('seconds', 0):5.0f}  {text[:110]}")
    failed = report.get("failed_checks") or []
    for item in failed:
        part, _, check = item.partition(".")
        c = report["parts"][part]["checks"][check]
        say(f"  FAILED {item}: {_short(c['value'])[:150]} (want {c['limit']})")
    say(f"total {report.get('seconds', 0):.0f} s; {len(failed)} failed check(s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    run_suite(args)
    return 0


def _role_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["trainer"], required=True)
    parser.add_argument("--lock-dir", required=True)
    parser.add_argument("--signals", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    return trainer_main(parser.parse_args(argv))


if __name__ == "__main__":
    if "--role" in sys.argv[1:]:
        sys.exit(_role_main(sys.argv[1:]))
    sys.exit(main())
