"""S: the training-step time of a network, measured on the device that trains it.

design, decision 3: S is *measured*, not estimated. One training step (forward,
backward, optimizer step) is timed at the proxy batch size, resolution, dtype and
memory format, after a warm-up, with the device synchronized, and summarized by the
median and the 10th/90th percentiles. Results are cached per (arch, device
fingerprint, batch, resolution, classes) in a JSON file shared by every process on the
host, and the measurement holds the device exclusively (a per-device reader/writer
lock that trainers hold shared) so that S is never measured while another trial
trains on the same device.

The cache is a file anyone can damage, so it is not trusted: an unreadable file, or an
entry whose figures no real training step can produce (not finite, under
``MIN_STEP_TIME``, percentiles out of order), is ignored with one line on stderr and S
is measured again. A measurement whose spread says the device was busy is returned,
flagged ``busy``, but never cached. Notices go through the ``nas.measure`` logger: one
plain line each (Python prints a warning of an unconfigured logger as its bare message).

Example:
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(8, 10))
    >>> st = measure_step_time(net, batch=2, resolution=8, num_classes=10, device="cpu",
    ...                        warmup=1, repeats=3, min_time=0.0, exclusive=False)
    >>> st.step_time_p10 <= st.step_time <= st.step_time_p90
    True
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._echo import clip

try:  # POSIX only; elsewhere the locks degrade to no-ops (see _FileLock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DTYPES",
    "MIN_STEP_TIME",
    "StepTime",
    "StepTimeCache",
    "device_fingerprint",
    "exclusive_device",
    "measure_step_time",
    "shared_device",
]

#: Accepted values of ``measure_step_time(dtype=...)``.
DTYPES = ("auto", "float32", "bfloat16", "float16")

#: Seconds below which no training step of a real network runs (a launch alone takes
#: microseconds); a cached S under it is damage, not a measurement.
MIN_STEP_TIME = 1e-6

_log = logging.getLogger(__name__)
_CACHE_VERSION = 1
_POLL_S = 0.02


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class StepTime:
    """One measurement of S.

    Attributes:
        step_time: Median seconds of one full training step (forward, backward,
            optimizer step).
        step_time_p10: 10th percentile of the timed steps, seconds.
        step_time_p90: 90th percentile of the timed steps, seconds.
        device: The device fingerprint (see `device_fingerprint`).
        batch: Batch size of the timed steps.
        resolution: Input height = width, pixels.
        repeats: Number of timed training steps the figures summarize.
        inference_latency: Median seconds of one eval-mode forward (no grad) at the
            same batch size.
        peak_memory: Peak CUDA memory the training steps allocated on top of what
            was allocated before measuring (weights copy, gradients, optimizer
            state, activations), bytes; None off CUDA.
        exclusive: True when the device was held exclusively while measuring.
        cached: True when the figures come from the cache, not a fresh measurement.
        busy: True when the steps' spread (p90/p10 above ``max_spread``) says another
            process competed for the device, so S may not repeat; never cached.
    """

    step_time: float
    step_time_p10: float
    step_time_p90: float
    device: str
    batch: int
    resolution: int
    repeats: int
    inference_latency: float
    peak_memory: int | None
    exclusive: bool
    cached: bool = False
    busy: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTime:
        """Builds a `StepTime` from `to_dict` output.

        Raises:
            ValueError: When a field is missing or unknown.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown StepTime fields {unknown}")
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"missing StepTime fields {missing}")
        return cls(
            step_time=float(data["step_time"]),
            step_time_p10=float(data["step_time_p10"]),
            step_time_p90=float(data["step_time_p90"]),
            device=str(data["device"]),
            batch=int(data["batch"]),
            resolution=int(data["resolution"]),
            repeats=int(data["repeats"]),
            inference_latency=float(data["inference_latency"]),
            peak_memory=None if data["peak_memory"] is None else int(data["peak_memory"]),
            exclusive=bool(data["exclusive"]),
            cached=bool(data.get("cached", False)),
            busy=bool(data.get("busy", False)),
        )

    def implausible(self) -> str | None:
        """Why these figures cannot be a real, repeatable measurement; None when they can."""
        times = {"step_time": self.step_time, "step_time_p10": self.step_time_p10,
                 "step_time_p90": self.step_time_p90, "inference_latency": self.inference_latency}
        for name, value in times.items():
            if not math.isfinite(value) or value <= 0:
                return f"{name} is {value!r}"
        if self.step_time_p10 < MIN_STEP_TIME:
            return f"step_time_p10 of {self.step_time_p10:.3g} s is below {MIN_STEP_TIME:g} s"
        if not self.step_time_p10 <= self.step_time <= self.step_time_p90:
            return "percentiles out of order (p10 <= median <= p90 fails)"
        if self.repeats < 1:
            return f"repeats is {self.repeats}"
        if self.busy:
            return "measured on a busy device"
        return None


# --------------------------------------------------------------------- fingerprint


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_fingerprint(device: torch.device | str, *, dtype: torch.dtype,
                       channels_last: bool) -> str:
    """Names the hardware and software setup a step time is valid for.

    Two measurements are comparable (and a cached one reusable) only when their
    fingerprints are equal: same accelerator model (or CPU model and thread count),
    same torch and CUDA versions, same compute dtype and memory format.

    Args:
        device: The device that runs the steps.
        dtype: The compute dtype (the autocast dtype, or float32 without autocast).
        channels_last: Whether activations use the channels-last memory format.

    Returns:
        For example ``"NVIDIA H200|torch 2.13.0|cuda 12.8|bfloat16|channels_last"`` or
        ``"cpu:Intel(R) Xeon(R) Processor x2|torch 2.13.0|float32|contiguous"``.

    Raises:
        ValueError: For a device string torch does not understand, or CUDA asked for
            where it is not available.
    """
    dev = _resolve_device(device)
    torch_version = torch.__version__.split("+", 1)[0]
    fmt = "channels_last" if channels_last else "contiguous"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        runtime = (f"cuda {torch.version.cuda}" if torch.version.cuda
                   else f"hip {getattr(torch.version, 'hip', None)}")
        parts = [name, f"torch {torch_version}", runtime]
    elif dev.type == "cpu":
        # Threads are part of it: the same CPU at 2 and 16 threads is two devices.
        parts = [f"cpu:{_cpu_model_name()} x{torch.get_num_threads()}",
                 f"torch {torch_version}"]
    else:
        parts = [dev.type, f"torch {torch_version}"]
    return "|".join(parts + [_dtype_name(dtype), fmt])


# --------------------------------------------------------------------------- locks


class _FileLock:
    """An ``fcntl.flock`` on a file of its own open file description.

    Separate `_FileLock` objects on one path conflict with each other even inside
    one process (flock locks belong to the open file description), which is what
    lets threads act as separate holders.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> bool:
        """Opens (creating) the lock file; False when it cannot be opened."""
        if fcntl is None:
            return False
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            try:  # another user's lock file: flock needs no write access
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return False
        return True

    def acquire(self, shared: bool, deadline: float | None) -> None:
        """Takes the lock, polling until ``deadline`` (perf_counter) when given.

        When the lock is taken by others, says once who holds it: a search that waits
        for the device must not look hung.

        Raises:
            TimeoutError: When the deadline passes first.
        """
        assert self._fd is not None and fcntl is not None
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holders = ", ".join(str(pid) for pid in self.holders()) or "another process"
            _log.warning("nas: waiting for the device (%s, held by PID %s)", self.path.name, holders)
        if deadline is None:
            fcntl.flock(self._fd, mode)
            return
        while True:
            try:
                fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.perf_counter() >= deadline:
                    raise TimeoutError(
                        f"could not take the {'shared' if shared else 'exclusive'} "
                        f"lock {self.path} in time") from None
                time.sleep(_POLL_S)

    def holders(self) -> list[int]:
        """PIDs holding a lock on this file, from /proc/locks (Linux; empty elsewhere)."""
        assert self._fd is not None
        st = os.fstat(self._fd)
        inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pids = set()
        try:
            with open("/proc/locks", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    parts = line.split()
                    # "1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF"; waiters are marked "->"
                    if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == inode and parts[4] != str(os.getpid()):
                        pids.add(int(parts[4]))
        except (OSError, ValueError):
            return []
        return sorted(pids)

    def release(self) -> None:
        """Unlocks and closes; closing alone would unlock, this is explicit."""
        if self._fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


# Per-thread record of the device locks this thread holds: re-entry must not
# self-deadlock (a second flock in the same thread would wait for itself).
_held = threading.local()


def _held_map() -> dict[str, list[str]]:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


def _device_lock_id(dev: torch.device) -> str:
    if dev.type == "cuda":
        # The physical GPU, not the index: under CUDA_VISIBLE_DEVICES (Ray) two
        # trials on different GPUs both see cuda:0.
        props = torch.cuda.get_device_properties(dev)
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            return f"cuda-{uuid}"
        return f"cuda{dev.index}"
    return dev.type


def _lock_paths(device: torch.device | str, lock_dir: str | os.PathLike[str] | None
                ) -> tuple[str, Path, Path]:
    dev = _resolve_device(device)
    key = _device_lock_id(dev)
    base = Path(lock_dir) if lock_dir is not None else Path(tempfile.gettempdir())
    return key, base / f"nas-device-{key}.lock", base / f"nas-device-{key}.gate.lock"


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    return time.perf_counter() + timeout


@contextlib.contextmanager
def exclusive_device(device: torch.device | str, *, timeout: float | None = None,
                     lock_dir: str | os.PathLike[str] | None = None) -> Iterator[bool]:
    """Holds ``device`` exclusively on this host: no trainer holds it shared meanwhile.

    A writer-preferring reader/writer lock: the writer first takes a "gate" file
    exclusively, which stops new readers from entering, then waits for the readers
    already training to leave the device file. Without the gate, trainers whose
    epochs overlap could keep the device busy forever and starve the measurement.

    Args:
        device: The device to hold (a CUDA device is identified by its UUID).
        timeout: Seconds to wait; None waits as long as it takes.
        lock_dir: Folder of the lock files; default the system temp folder
            (``/tmp/nas-device-<id>.lock``).

    Yields:
        True when the lock is held; False when locking is unavailable here (no
        fcntl, or the lock file cannot be opened), in which case nothing is held.

    Raises:
        TimeoutError: When ``timeout`` passes before the device is free.
        RuntimeError: When this thread holds the device shared (it would wait for
            itself forever).
    """
    key, path, gate_path = _lock_paths(device, lock_dir)
    held = _held_map()
    modes = held.get(str(path), [])
    if "exclusive" in modes:  # re-entrant
        yield True
        return
    if "shared" in modes:
        raise RuntimeError(
            f"this thread holds device {key} shared; leave shared_device() before "
            f"exclusive_device()")
    deadline = _deadline(timeout)
    gate, lock = _FileLock(gate_path), _FileLock(path)
    if not (gate.open() and lock.open()):
        gate.release()
        lock.release()
        _log.warning("nas: device lock %s unavailable; measuring without holding the device "
                     "exclusively", path)
        yield False
        return
    try:
        gate.acquire(shared=False, deadline=deadline)
        lock.acquire(shared=False, deadline=deadline)
        held.setdefault(str(path), []).append("exclusive")
        try:
            yield True
        finally:
            held[str(path)].remove("exclusive")
    finally:
        lock.release()
        gate.release()


@contextlib.contextmanager
def shared_device(device: torch.device | str, *, timeout: float | None = None,
                  lock_dir: str | os.PathLike[str] | None = None) -> Iterator[bool]:
    """Holds ``device`` shared: trainers wrap each epoch in this.

    Any number of shared holders coexist; an exclusive holder (a measurement) waits
    for all of them, and new shared holders wait while a measurement is pending or
    running.

    Args:
        device: The device to hold.
        timeout: Seconds to wait; None waits as long as it takes.
        lock_dir: Folder of the lock files; default the system temp folder.

    Yields:
        True when the lock is held; False when locking is unavailable here.

    Raises:
        TimeoutError: When ``timeout`` passes before the device can be shared.
    """
    _, path, gate_path = _lock_paths(device, lock_dir)
    held = _held_map()
    if held.get(str(path)):  # already shared or exclusive in this thread
        yield True
        return
    deadline = _deadline(timeout)
    gate, lock = _FileLock(gate_path), _FileLock(path)
    if not (gate.open() and lock.open()):
        gate.release()
        lock.release()
        yield False
        return
    try:
        # Pass through the gate (blocked while a measurement waits or runs), then
        # hold the device shared and let the gate go at once.
        gate.acquire(shared=True, deadline=deadline)
        try:
            lock.acquire(shared=True, deadline=deadline)
        finally:
            gate.release()
        held.setdefault(str(path), []).append("shared")
        try:
            yield True
        finally:
            held[str(path)].remove("shared")
    finally:
        lock.release()
        gate.release()


# --------------------------------------------------------------------------- cache


#: A cached and a fresh S of one network further apart than this factor: the cache was
#: filled at another load of the device (a tight spread cannot tell a uniformly busier host).
STALE_CACHE_RATIO = 1.25


class StepTimeCache:
    """Step times kept in a JSON file, shared by every process on the host.

    Keyed by (cache key — the canonical arch string —, device fingerprint, batch,
    resolution, classes). Reads and writes take an ``fcntl`` lock on a side file and
    writes go through a temp file and ``os.replace``, so concurrent workers never
    see a half-written file. An unreadable file, or an implausible entry (see
    `StepTime.implausible`), is ignored with one line on stderr; the next write
    replaces the file with its valid entries only.

    Example:
        >>> import tempfile, os
        >>> cache = StepTimeCache(os.path.join(tempfile.mkdtemp(), "st.json"))
        >>> cache.get("arch", "cpu|f32", batch=8, resolution=64) is None
        True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Opens a cache; the JSON file (and its folder) is created on the first `put`."""
        self.path = Path(path).expanduser()
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"StepTimeCache({str(self.path)!r})"

    @staticmethod
    def key(cache_key: str, fingerprint: str, batch: int, resolution: int,
            num_classes: int | None = None) -> str:
        """The entry name: a JSON list, so no separator inside a field can collide."""
        return json.dumps([cache_key, fingerprint, int(batch), int(resolution),
                           None if num_classes is None else int(num_classes)])

    @contextlib.contextmanager
    def _locked(self, shared: bool) -> Iterator[None]:
        lock = _FileLock(self._lock_path)
        if not shared:  # only a write creates the folder; a read of nothing is a miss
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        if lock.open():
            try:
                lock.acquire(shared=shared, deadline=None)
                yield
            finally:
                lock.release()
        else:  # read-only place or no fcntl: atomic replace still protects readers
            yield

    def _read(self, *, quiet: bool = False) -> dict[str, Any]:
        """The entries on disk; {} for a missing or unreadable file (told unless ``quiet``)."""
        try:
            data = json.loads(self.path.read_bytes().decode("utf-8"))
            entries = data["entries"]
            if not isinstance(entries, dict) or data.get("version") != _CACHE_VERSION:
                raise ValueError("unexpected layout")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: bad UTF-8 and bad JSON
            if not quiet:
                _log.warning("nas: step-time cache %s is unreadable (%s); measuring again",
                             self.path, _short(exc))
            return {}
        return entries

    def get(self, cache_key: str, fingerprint: str, *, batch: int, resolution: int,
            num_classes: int | None = None) -> StepTime | None:
        """Looks a measurement up.

        Returns:
            The stored `StepTime` with ``cached=True``, or None on a miss, an unreadable
            file or an implausible entry (each told in one line).
        """
        with self._locked(shared=True):
            entries = self._read()
        key = self.key(cache_key, fingerprint, batch, resolution, num_classes)
        if key not in entries:
            return None
        try:
            result = _trusted_entry(key, entries[key])
        except ValueError as exc:
            _log.warning("nas: step-time cache %s: ignoring an entry (%s); measuring again", self.path, exc)
            return None
        return dataclasses.replace(result, cached=True)

    def put(self, cache_key: str, fingerprint: str, result: StepTime, *,
            num_classes: int | None = None) -> None:
        """Stores a measurement under (cache_key, fingerprint, its batch, resolution).

        Other processes' entries written meanwhile are kept: the file is re-read
        under the exclusive lock and merged; entries that fail
        `StepTime.implausible` are dropped, and an unreadable file is replaced.

        Raises:
            ValueError: When ``result`` itself is implausible (e.g. flagged busy).
            OSError: When the file cannot be written.
        """
        reason = result.implausible()
        if reason is not None:
            raise ValueError(f"refusing to cache a step time: {reason}")
        key = self.key(cache_key, fingerprint, result.batch, result.resolution, num_classes)
        entry = dataclasses.replace(result, cached=False).to_dict()
        self._rewrite(lambda entries: {**entries, key: entry})

    def forget_device(self, fingerprint: str) -> int:
        """Drops every entry measured on the device ``fingerprint``; returns how many there were."""
        dropped = 0

        def keep_others(entries: dict[str, Any]) -> dict[str, Any]:
            nonlocal dropped
            kept = {k: v for k, v in entries.items() if json.loads(k)[1] != fingerprint}  # trusted keys parse
            dropped = len(entries) - len(kept)
            return kept

        self._rewrite(keep_others)
        return dropped

    def _rewrite(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Replaces the file with ``change(its trusted entries)``, under the exclusive lock."""
        with self._locked(shared=False):
            # Quiet: the reader that found the damage has said so, and this write repairs it.
            entries = change({k: v for k, v in self._read(quiet=True).items() if _is_trusted(k, v)})
            payload = json.dumps({"version": _CACHE_VERSION, "entries": entries},
                                 indent=1, sort_keys=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise



class CacheCheck:
    """Trusts a step-time cache for this process once its first hits agree with the device now.

    A host that was uniformly busier (or quieter) when the cache was filled leaves S that
    a tight spread cannot flag; mixed with fresh ones they skew every reward. So the first
    ``checks`` cache hits are measured again (a search: its reference, then its first
    cached candidate): if a pair differs by more than :data:`STALE_CACHE_RATIO`, every
    entry of that device is dropped (each S is measured again when next needed) and the
    fresh figure is used and stored.

    Attributes:
        checks_left: Hits still to be measured again (0 without a cache, or once stale).
        load_ratio: The fresh S over the cached one of the last checked entry (1 until
            then): how much slower the device is now than when the cache was filled.
        stale: Whether a check found the cache stale (and dropped the device's entries).
    """

    def __init__(self, cache: StepTimeCache | None, log: Callable[[str], None] | None = None, *,
                 checks: int = 2) -> None:
        self.cache, self.log = cache, log
        self.checks_left, self.load_ratio, self.stale = 0 if cache is None else checks, 1.0, False

    @property
    def checked(self) -> bool:
        return self.checks_left == 0

    def __call__(self, step: StepTime, cache_key: str, measure_fresh: Callable[[], StepTime], *,
                 num_classes: int | None = None) -> StepTime:
        """``step`` as measured through the cache, or, for a checked hit that disagrees, ``measure_fresh()``."""
        if self.checked or not step.cached:
            return step
        fresh = measure_fresh()
        self.checks_left -= 1
        self.load_ratio = fresh.step_time / step.step_time
        if max(fresh.step_time, step.step_time) <= STALE_CACHE_RATIO * min(fresh.step_time, step.step_time):
            return step
        self.checks_left = 0  # every entry of the device is gone: what is cached from now on is fresh
        dropped, self.stale = 0, True
        with contextlib.suppress(OSError):
            dropped = self.cache.forget_device(fresh.device)
            if fresh.implausible() is None:  # what a cache may hold (not busy, not too fast to trust)
                self.cache.put(cache_key, fresh.device, fresh, num_classes=num_classes)
        if self.log is not None:
            self.log(f"the step-time cache was filled at another load of this device (S of {cache_key}: "
                     f"{step.step_time * 1e3:.2f} ms cached, {fresh.step_time * 1e3:.2f} ms now): its {dropped} "
                     "entries for this device are dropped and every S is measured afresh")
        return fresh


def _trusted_entry(key: str, raw: Any) -> StepTime:
    """The `StepTime` a cache entry holds; ValueError saying why it cannot be trusted."""
    try:
        result = StepTime.from_dict(raw)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"bad entry: {_short(exc)}") from None
    reason = result.implausible()
    if reason is not None:
        raise ValueError(reason)
    try:
        _, fingerprint, batch, resolution, _ = json.loads(key)
    except (ValueError, TypeError):
        raise ValueError("bad key") from None
    if (result.device, result.batch, result.resolution) != (fingerprint, batch, resolution):
        raise ValueError("its device, batch or resolution differs from its key")
    return result


def _is_trusted(key: str, raw: Any) -> bool:
    try:
        _trusted_entry(key, raw)
    except ValueError:
        return False
    return True


def _short(exc: BaseException) -> str:
    """An exception as a short phrase (a decode error would quote the bad bytes)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return clip(" ".join(str(exc).split()) or type(exc).__name__)


# --------------------------------------------------------------------- measurement


def _resolve_dtype(dtype: str, dev: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if dev.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time_steps(step: Callable[[], None], dev: torch.device, *, repeats: int,
                min_time: float, max_repeats: int) -> list[float]:
    """Seconds of each timed call of ``step``.

    Time-boxed: at least ``repeats`` calls, and more until ``min_time`` seconds of
    timed calls have passed (at most ``max_repeats``). A median over a second of
    steps shrugs off the odd slow step from a busy host, so a fixed small count
    is not relied on for repeatability.
    """
    times: list[float] = []
    if dev.type == "cuda":
        # CUDA events time the device work itself and need no synchronize between
        # steps, so the host keeps queueing as it does in real training.
        pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        start_wall = time.perf_counter()
        while True:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            pending.append((begin, end))
            n = len(pending)
            if n >= max_repeats:
                break
            # The host runs at most a few steps ahead of the device, so its wall
            # clock is a fair stand-in for the time-box without a synchronize.
            if n >= repeats and time.perf_counter() - start_wall >= min_time:
                break
        _sync(dev)
        times = [b.elapsed_time(e) / 1e3 for b, e in pending]
    else:
        total = 0.0
        while True:
            t0 = time.perf_counter()
            step()
            _sync(dev)
            dt = time.perf_counter() - t0
            times.append(dt)
            total += dt
            if len(times) >= max_repeats or (len(times) >= repeats and total >= min_time):
                break
    return times


def _validate(batch: int, resolution: int, num_classes: int, warmup: int, repeats: int,
              min_time: float, max_spread: float) -> None:
    for name, value, low in (("batch", batch, 1), ("resolution", resolution, 1),
                             ("num_classes", num_classes, 1), ("warmup", warmup, 0),
                             ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not min_time >= 0:
        raise ValueError(f"min_time must be >= 0 seconds, got {min_time!r}")
    if not max_spread >= 1:
        raise ValueError(f"max_spread must be >= 1 (a ratio p90/p10), got {max_spread!r}")


def measure_step_time(model: nn.Module, *, batch: int, resolution: int, num_classes: int,
                      device: str | torch.device | None = None, dtype: str = "auto",
                      channels_last: bool | None = None, warmup: int = 3,
                      repeats: int = 15, cache: StepTimeCache | None = None,
                      cache_key: str | None = None, exclusive: bool = True,
                      min_time: float = 3.0, max_repeats: int = 500, max_spread: float = 2.0,
                      lock_dir: str | os.PathLike[str] | None = None) -> StepTime:
    """Measures S: the seconds of one full training step of ``model`` on ``device``.

    A deep copy of ``model`` is timed (the caller's model, weights and buffers are
    untouched): train mode, SGD with momentum, a fixed random batch of shape
    (batch, 3, resolution, resolution) with random labels, cross-entropy. After
    ``warmup`` untimed steps, at least ``repeats`` steps are timed and more until
    ``min_time`` seconds have been timed. Also timed: one eval-mode forward under
    ``torch.no_grad`` (``inference_latency``), and on CUDA the peak memory.

    A cache hit is served only when its figures are plausible (`StepTime.implausible`);
    otherwise S is measured again. A measurement whose p90/p10 exceeds ``max_spread`` is
    returned with ``busy=True`` and one line on stderr, and is not cached: a later run
    measures again rather than reuse a figure another process distorted.

    Args:
        model: The network; it must map (N, 3, R, R) images to (N, num_classes).
        batch: Batch size of a step (the proxy training batch).
        resolution: Image height = width (the proxy training resolution).
        num_classes: Number of classes of the random labels.
        device: Where to measure; default CUDA when available, else CPU.
        dtype: "auto" (bf16 autocast on CUDA, float32 on CPU), "float32",
            "bfloat16" or "float16" (autocast with a grad scaler).
        channels_last: Memory format; None = channels-last on CUDA only.
        warmup: Untimed steps first (allocator, cuDNN autotuning, caches).
        repeats: Minimum number of timed steps.
        cache: A `StepTimeCache` to read first and write after measuring.
        cache_key: The canonical arch string; without it the cache is not used.
        exclusive: Hold the device exclusively (see `exclusive_device`) while
            measuring, so no trial trains on it meanwhile.
        min_time: Keep timing steps until this many seconds are timed.
        max_repeats: Upper bound on timed steps.
        max_spread: p90/p10 of the timed steps above which the device counts as busy
            (a quiet device times steps within a few percent of each other).
        lock_dir: Folder of the device lock files; default the system temp folder.

    Returns:
        The `StepTime`; ``cached=True`` when it came from ``cache``.

    Raises:
        ValueError: For a bad batch, resolution, class count, dtype, device or
            repeat count.
        torch.cuda.OutOfMemoryError: When a step does not fit on the device.
    """
    _validate(batch, resolution, num_classes, warmup, repeats, min_time, max_spread)
    if max_repeats < repeats:
        raise ValueError(f"max_repeats ({max_repeats}) must be >= repeats ({repeats})")
    dev = _resolve_device(device)
    compute_dtype = _resolve_dtype(dtype, dev)
    if channels_last is None:
        channels_last = dev.type == "cuda"
    fingerprint = device_fingerprint(dev, dtype=compute_dtype, channels_last=channels_last)

    use_cache = cache is not None and cache_key is not None
    if use_cache:
        hit = cache.get(cache_key, fingerprint, batch=batch, resolution=resolution,
                        num_classes=num_classes)
        if hit is not None:
            return hit

    lock = (exclusive_device(dev, lock_dir=lock_dir) if exclusive
            else contextlib.nullcontext(False))
    with lock as held:
        result = _measure(model, dev=dev, compute_dtype=compute_dtype,
                          channels_last=channels_last, batch=batch, resolution=resolution,
                          num_classes=num_classes, warmup=warmup, repeats=repeats,
                          min_time=min_time, max_repeats=max_repeats, max_spread=max_spread,
                          fingerprint=fingerprint, exclusive=bool(held))
    if use_cache and result.implausible() is None:  # busy (told above), or a step too fast to trust
        try:
            cache.put(cache_key, fingerprint, result, num_classes=num_classes)
        except OSError as exc:  # a read-only or full disk costs a re-measure, not the trial
            _log.warning("nas: could not write step-time cache %s (%s)", cache.path, _short(exc))
    return result


def _measure(model: nn.Module, *, dev: torch.device, compute_dtype: torch.dtype,
             channels_last: bool, batch: int, resolution: int, num_classes: int,
             warmup: int, repeats: int, min_time: float, max_repeats: int, max_spread: float,
             fingerprint: str, exclusive: bool) -> StepTime:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = compute_dtype != torch.float32
    # Seeded private generator: the same batch every time, global RNG left alone.
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, resolution, resolution, generator=gen)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    images = images.to(dev).contiguous(memory_format=memory_format)
    labels = labels.to(dev)
    # Peak memory is reported on top of what was allocated before (the caller's own
    # model may live on this device): weights copy, grads, optimizer state, activations.
    base_memory = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0

    net = copy.deepcopy(model).to(dev, memory_format=memory_format)
    net.train()
    # lr is tiny so the timed steps cannot drive weights into NaN/denormals, which
    # would change CPU speed; the arithmetic done per step is the same at any lr.
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    scaler = (torch.amp.GradScaler(dev.type)
              if compute_dtype == torch.float16 and dev.type == "cuda" else None)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=compute_dtype, enabled=autocast):
            loss = F.cross_entropy(net(images), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def eval_step() -> None:
        with torch.no_grad(), torch.autocast(dev.type, dtype=compute_dtype,
                                             enabled=autocast):
            net(images)

    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        if dev.type == "cuda":
            # Trainers autotune convolutions too; warm-up absorbs the tuning.
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(dev)
        # At least `warmup` steps and a quarter of the timing window: on a shared or virtual
        # CPU the first second after a model arrives runs measurably slower.
        warm_start, warm_steps = time.perf_counter(), 0
        while warm_steps < warmup or (time.perf_counter() - warm_start < min_time / 4 and warm_steps < max_repeats):
            train_step()
            warm_steps += 1
        _sync(dev)
        train_times = _time_steps(train_step, dev, repeats=repeats, min_time=min_time,
                                  max_repeats=max_repeats)
        peak = (int(torch.cuda.max_memory_allocated(dev)) - base_memory
                if dev.type == "cuda" else None)

        net.eval()
        for _ in range(max(1, min(warmup, 2))):
            eval_step()
        _sync(dev)
        eval_times = _time_steps(eval_step, dev, repeats=max(3, repeats),
                                 min_time=min_time / 3, max_repeats=max_repeats)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        del net, optimizer, images, labels
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # leave the memory to the trials that train next

    arr = np.asarray(train_times, dtype=np.float64)
    p10, median, p90 = (float(x) for x in np.percentile(arr, [10, 50, 90]))
    # Interpolated percentiles are ordered already; clamp guards float round-off.
    p10, p90 = min(p10, median), max(p90, median)
    # A quiet device times steps within a few percent of each other; a wide spread
    # means another process competes for it (on CPU, OpenMP threads stall each
    # other), so this S may not repeat.
    busy = not (p10 > 0 and p90 / p10 <= max_spread)
    if busy:
        _log.warning("nas: step times spread widely (p10 %.3g ms, p90 %.3g ms): the device looks busy; "
                     "S may not repeat and is not cached", p10 * 1e3, p90 * 1e3)
    return StepTime(
        step_time=median,
        step_time_p10=p10,
        step_time_p90=p90,
        device=fingerprint,
        batch=batch,
        resolution=resolution,
        repeats=len(train_times),
        inference_latency=float(np.median(np.asarray(eval_times, dtype=np.float64))),
        peak_memory=peak,
        exclusive=exclusive,
        busy=busy,
    )
