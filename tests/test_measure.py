"""S measurement: statistics, fingerprint, model untouched, cache (and its damage), device lock."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from nas.measure import (
    MIN_STEP_TIME,
    StepTime,
    StepTimeCache,
    device_fingerprint,
    exclusive_device,
    measure_step_time,
    shared_device,
)

ROOT = Path(__file__).resolve().parents[1]
# A tiny net's millisecond steps jitter widely: no spread counts as busy here, or nothing
# would be cached (the busy check is tested on its own).
FAST = dict(batch=4, resolution=16, num_classes=10, device="cpu", warmup=1, repeats=3,
            min_time=0.0, max_spread=math.inf)
GOOD = StepTime(step_time=1.0, step_time_p10=0.9, step_time_p90=1.1, device="d", batch=1, resolution=8,
                repeats=3, inference_latency=0.1, peak_memory=None, exclusive=True)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # The tiny net's ops are too small to split across threads, and on a busy 2-core
    # host two OpenMP threads stall on each other; one thread keeps the suite quick.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    # Private lock files: the tests neither wait for nor block real trainers.
    path = tmp_path / "locks"
    path.mkdir()
    return path


def test_statistics(lock_dir: Path) -> None:
    st = measure_step_time(tiny_net(), **FAST, lock_dir=lock_dir)
    assert isinstance(st, StepTime)
    assert 0 < st.step_time_p10 <= st.step_time <= st.step_time_p90
    assert st.repeats == 3  # min_time=0: exactly the minimum
    assert (st.batch, st.resolution) == (4, 16)
    assert st.inference_latency > 0
    assert st.peak_memory is None  # CPU
    assert st.exclusive and not st.cached
    assert st.device == device_fingerprint("cpu", dtype=torch.float32, channels_last=False)
    assert StepTime.from_dict(json.loads(json.dumps(st.to_dict()))) == st


def test_summary_statistics_exact(monkeypatch: pytest.MonkeyPatch, lock_dir: Path) -> None:
    import nas.measure

    times = iter([[0.1 * i for i in range(10, 0, -1)], [0.05] * 3])  # train, then eval
    monkeypatch.setattr(nas.measure, "_time_steps", lambda *a, **k: next(times))
    st = measure_step_time(tiny_net(), **FAST, lock_dir=lock_dir)
    assert st.step_time == pytest.approx(0.55)
    assert st.step_time_p10 == pytest.approx(0.19)
    assert st.step_time_p90 == pytest.approx(0.91)
    assert st.repeats == 10
    assert st.inference_latency == pytest.approx(0.05)


def test_time_box_runs_past_repeats(lock_dir: Path) -> None:
    # 60 s of timing asked for, capped at 4 steps: it keeps going past `repeats`
    # (2) and stops at the cap.
    capped = measure_step_time(tiny_net(), **(FAST | dict(min_time=60.0, repeats=2)),
                               max_repeats=4, lock_dir=lock_dir)
    assert capped.repeats == 4


def test_fingerprint_contents() -> None:
    version = torch.__version__.split("+")[0]
    fp = device_fingerprint("cpu", dtype=torch.float32, channels_last=False)
    name, torch_part, dtype, fmt = fp.split("|")
    assert name.startswith("cpu:") and name.endswith(f" x{torch.get_num_threads()}")
    assert torch_part == f"torch {version}"
    assert (dtype, fmt) == ("float32", "contiguous")
    fp16 = device_fingerprint(torch.device("cpu"), dtype=torch.bfloat16, channels_last=True)
    assert fp16.endswith("|bfloat16|channels_last") and fp16 != fp


def test_model_untouched(lock_dir: Path) -> None:
    model = tiny_net()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_step_time(model, **FAST, lock_dir=lock_dir)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():  # weights and BN running stats alike
        assert torch.equal(value, after[key]), key
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_bf16_channels_last_on_cpu(lock_dir: Path) -> None:
    st = measure_step_time(tiny_net(), **FAST, dtype="bfloat16", channels_last=True,
                           lock_dir=lock_dir)
    assert st.device.endswith("|bfloat16|channels_last")
    assert st.step_time_p10 <= st.step_time <= st.step_time_p90


def test_bad_arguments(lock_dir: Path) -> None:
    with pytest.raises(ValueError, match="batch must be"):
        measure_step_time(tiny_net(), **(FAST | dict(batch=0)))
    with pytest.raises(ValueError, match="resolution must be"):
        measure_step_time(tiny_net(), **(FAST | dict(resolution=-3)))
    with pytest.raises(ValueError, match="repeats must be"):
        measure_step_time(tiny_net(), **(FAST | dict(repeats=0)))
    with pytest.raises(ValueError, match="'fp8'"):
        measure_step_time(tiny_net(), **FAST, dtype="fp8")
    with pytest.raises(ValueError, match="bad device 'gpu0'"):
        measure_step_time(tiny_net(), **(FAST | dict(device="gpu0")))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_step_time(tiny_net(), **(FAST | dict(device="cuda")))


# ------------------------------------------------------------------------- cache


def test_cache_hit(tmp_path: Path, lock_dir: Path) -> None:
    cache = StepTimeCache(tmp_path / "sub" / "step_times.json")
    first = measure_step_time(tiny_net(), **(FAST | dict(min_time=0.3)), cache=cache,
                              cache_key="arch-a", lock_dir=lock_dir)
    assert not first.cached
    t0 = time.perf_counter()
    second = measure_step_time(tiny_net(), **(FAST | dict(min_time=0.3)), cache=cache,
                               cache_key="arch-a", lock_dir=lock_dir)
    elapsed = time.perf_counter() - t0
    assert second.cached
    assert second.to_dict() | {"cached": False} == first.to_dict()
    assert elapsed < 0.3  # a file read, not a measurement of >= 0.3 s of steps
    # A fresh process (new object) sees it too.
    again = StepTimeCache(cache.path).get("arch-a", first.device, batch=4, resolution=16,
                                          num_classes=10)
    assert again is not None and again.step_time == first.step_time


def test_cache_keyed_by_batch_resolution_and_arch(tmp_path: Path, lock_dir: Path) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir)
    for change in (dict(batch=2), dict(resolution=8)):
        other = measure_step_time(tiny_net(), **(FAST | change), cache=cache, cache_key="a",
                                  lock_dir=lock_dir)
        assert not other.cached
    assert not measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="b",
                                 lock_dir=lock_dir).cached
    assert not measure_step_time(tiny_net(), **FAST, dtype="bfloat16", cache=cache,
                                 cache_key="a", lock_dir=lock_dir).cached
    # All five are now stored; each is a hit.
    assert measure_step_time(tiny_net(), **(FAST | dict(batch=2)), cache=cache, cache_key="a",
                             lock_dir=lock_dir).cached
    assert len(json.loads(cache.path.read_text())["entries"]) == 5


def test_cache_read_creates_nothing(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "absent" / "st.json")
    assert cache.get("a", "d", batch=1, resolution=8) is None
    assert not (tmp_path / "absent").exists()


def test_unwritable_cache_warns(tmp_path: Path, lock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = StepTimeCache(blocker / "st.json")  # its folder is a file: every write fails
    st = measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir)
    assert not st.cached
    assert notices(caplog)[-1].startswith(f"nas: could not write step-time cache {cache.path} (")


def test_no_cache_key_no_caching(tmp_path: Path, lock_dir: Path) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    measure_step_time(tiny_net(), **FAST, cache=cache, lock_dir=lock_dir)
    assert not measure_step_time(tiny_net(), **FAST, cache=cache, lock_dir=lock_dir).cached
    assert not cache.path.exists()


def notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines the measurement told the user (the logger's bare messages)."""
    return [r.getMessage() for r in caplog.records if r.name == "nas.measure"]


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 1, "entries": []}', b"[1, 2]", b"",
                                     os.urandom(3000), b"\xff\xfe garbage"])
def test_unreadable_cache_is_measured_again_and_rewritten(tmp_path: Path, lock_dir: Path, content: bytes,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    cache.path.write_bytes(content)
    st = measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir)
    assert not st.cached
    lines = notices(caplog)
    assert len(lines) == 1 and lines[0].startswith(f"nas: step-time cache {cache.path} is unreadable (")
    assert lines[0].endswith("); measuring again") and "\n" not in lines[0]
    caplog.clear()
    assert measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir).cached
    assert notices(caplog) == []  # the file was rewritten whole
    assert list(json.loads(cache.path.read_text())["entries"].values()) == [st.to_dict()]


def test_binary_cache_names_the_problem(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    cache.path.write_bytes(b"\x80" * 3000)
    assert cache.get("a", "d", batch=1, resolution=8) is None
    assert notices(caplog) == [f"nas: step-time cache {cache.path} is unreadable (not UTF-8 text); measuring again"]


@pytest.mark.parametrize("change, reason", [
    ({"step_time": 1e-9, "step_time_p10": 1e-9, "step_time_p90": 1e-9}, "step_time_p10 of 1e-09 s is below 1e-06 s"),
    ({"step_time": 0.0}, "step_time is 0.0"),
    ({"step_time": -1.0}, "step_time is -1.0"),
    ({"step_time": float("nan")}, "step_time is nan"),
    ({"step_time_p90": float("inf")}, "step_time_p90 is inf"),
    ({"step_time": 2.0}, "percentiles out of order (p10 <= median <= p90 fails)"),
    ({"step_time_p10": 1.05}, "percentiles out of order (p10 <= median <= p90 fails)"),
    ({"inference_latency": 0.0}, "inference_latency is 0.0"),
    ({"busy": True}, "measured on a busy device"),
    ({"batch": 2}, "its device, batch or resolution differs from its key"),
    ({"step_time": "fast"}, "bad entry: could not convert string to float: 'fast'"),
])
def test_implausible_entries_are_not_served(tmp_path: Path, change: dict, reason: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    cache.put("a", "d", GOOD)
    cache.put("b", "d", GOOD)
    data = json.loads(cache.path.read_text())
    data["entries"][cache.key("a", "d", 1, 8)] |= change
    cache.path.write_text(json.dumps(data))  # json writes NaN and Infinity, as a damaged file may hold
    assert cache.get("a", "d", batch=1, resolution=8) is None
    assert notices(caplog) == [f"nas: step-time cache {cache.path}: ignoring an entry ({reason}); measuring again"]
    # The next write keeps the good entry and drops the bad one.
    cache.put("c", "d", GOOD)
    assert set(json.loads(cache.path.read_text())["entries"]) == {cache.key(k, "d", 1, 8) for k in "bc"}


def test_the_smallest_plausible_step_is_served(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    fast = dataclasses.replace(GOOD, step_time=MIN_STEP_TIME, step_time_p10=MIN_STEP_TIME,
                               step_time_p90=MIN_STEP_TIME, inference_latency=MIN_STEP_TIME)
    cache.put("a", "d", fast)
    assert cache.get("a", "d", batch=1, resolution=8) == dataclasses.replace(fast, cached=True)
    with pytest.raises(ValueError, match="refusing to cache a step time: step_time_p10 of 1e-07 s"):
        cache.put("b", "d", dataclasses.replace(fast, step_time_p10=1e-7))


def test_poisoned_cache_is_measured_again(tmp_path: Path, lock_dir: Path) -> None:
    # What reliability.sh does: every step_time* field of every entry set to 1 ns.
    cache = StepTimeCache(tmp_path / "st.json")
    first = measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir)
    data = json.loads(cache.path.read_text())
    for entry in data["entries"].values():
        entry.update({k: 1e-9 for k in entry if k.startswith("step_time")})
    cache.path.write_text(json.dumps(data))
    again = measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir)
    assert not again.cached and again.step_time > MIN_STEP_TIME and again.device == first.device
    assert measure_step_time(tiny_net(), **FAST, cache=cache, cache_key="a", lock_dir=lock_dir).cached


def test_busy_measurement_is_returned_but_not_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     lock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import nas.measure

    spread = [0.1 * i for i in range(10, 0, -1)]  # p10 0.19 s, p90 0.91 s: 4.8x
    monkeypatch.setattr(nas.measure, "_time_steps", lambda *a, **k: list(spread))
    cache = StepTimeCache(tmp_path / "st.json")
    st = measure_step_time(tiny_net(), **(FAST | dict(max_spread=2.0)), cache=cache, cache_key="a",
                           lock_dir=lock_dir)
    assert st.busy and st.step_time == pytest.approx(0.55) and not cache.path.exists()
    assert notices(caplog) == ["nas: step times spread widely (p10 190 ms, p90 910 ms): the device looks busy; "
                               "S may not repeat and is not cached"]
    calm = measure_step_time(tiny_net(), **(FAST | dict(max_spread=5.0)), cache=cache, cache_key="a",
                             lock_dir=lock_dir)
    assert not calm.busy and not calm.cached and cache.path.exists()


def test_a_notice_is_one_plain_line_on_stderr() -> None:
    # No Python warning machinery (no "RuntimeWarning:", no source line): the bare message.
    code = "import nas.measure as m; m._log.warning('nas: step times spread widely: %s', 'x')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == "nas: step times spread widely: x\n"


def test_cache_concurrent_writers_keep_every_entry(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "st.json")
    template = GOOD

    def writer(worker: int) -> None:
        for i in range(10):
            StepTimeCache(cache.path).put(f"arch{worker}-{i}", "d", template)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(json.loads(cache.path.read_text())["entries"]) == 40
    assert cache.get("arch3-9", "d", batch=1, resolution=8) == StepTime(
        **(template.to_dict() | {"cached": True}))


def test_forget_device_drops_only_that_devices_entries(tmp_path: Path) -> None:
    import dataclasses

    cache = StepTimeCache(tmp_path / "st.json")
    other = dataclasses.replace(GOOD, device="e")
    for name in ("a", "b"):
        cache.put(name, "d", GOOD)
        cache.put(name, "e", other)
    assert cache.forget_device("d") == 2
    assert cache.get("a", "d", batch=1, resolution=8) is None and cache.get("b", "d", batch=1, resolution=8) is None
    assert cache.get("a", "e", batch=1, resolution=8) == dataclasses.replace(other, cached=True)
    assert cache.forget_device("d") == 0


def test_cache_check_measures_the_first_hits_again_and_drops_a_stale_device(tmp_path: Path) -> None:
    import dataclasses

    from nas.measure import CacheCheck

    cache = StepTimeCache(tmp_path / "st.json")
    for name in ("a", "b", "c"):
        cache.put(name, "d", GOOD)  # 1.0 s each

    def now(seconds: float):
        return lambda: dataclasses.replace(GOOD, step_time=seconds, step_time_p10=seconds * 0.9,
                                           step_time_p90=seconds * 1.1)

    def hit(name: str) -> StepTime:
        return cache.get(name, "d", batch=1, resolution=8)

    lines: list[str] = []
    check = CacheCheck(cache, lines.append)
    a = hit("a")
    assert check(a, "a", now(1.2)) is a and not check.checked  # within 1.25x: the cached figure stands
    got = check(hit("b"), "b", now(0.1))  # the device is 10x faster than when the cache was filled
    assert got.step_time == 0.1 and check.stale and check.checked and check.load_ratio == pytest.approx(0.1)
    assert hit("a") is None and hit("c") is None and hit("b").step_time == 0.1  # the fresh one stored
    assert len(lines) == 1 and "filled at another load of this device" in lines[0] and "its 3 entries" in lines[0]
    cache.put("c", "d", GOOD)
    c = hit("c")
    assert check(c, "c", lambda: pytest.fail("checked already")) is c
    assert CacheCheck(None).checked


# -------------------------------------------------------------------- device lock


def test_exclusive_blocks_shared_and_shared_blocks_exclusive(lock_dir: Path) -> None:
    with exclusive_device("cpu", lock_dir=lock_dir) as held:
        assert held
        outcome: list[BaseException | bool] = []

        def reader() -> None:
            try:
                with shared_device("cpu", timeout=0.2, lock_dir=lock_dir) as ok:
                    outcome.append(ok)
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                outcome.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        t.join(timeout=5)
        assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError)
    with shared_device("cpu", lock_dir=lock_dir) as held:
        assert held
        with shared_device("cpu", lock_dir=lock_dir):  # re-entrant in a thread
            pass
        errors: list[BaseException] = []
        shared_too: list[bool] = []

        def other() -> None:
            try:
                with shared_device("cpu", timeout=0.5, lock_dir=lock_dir) as ok:
                    shared_too.append(ok)  # readers coexist
                with exclusive_device("cpu", timeout=0.2, lock_dir=lock_dir):
                    pass
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=5)
        assert shared_too == [True]
        assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    with exclusive_device("cpu", timeout=0.5, lock_dir=lock_dir) as held:  # free again
        assert held


def _wait_until_gate_closed(lock_dir: Path, timeout: float = 10.0) -> None:
    fcntl = pytest.importorskip("fcntl")
    deadline = time.perf_counter() + timeout
    with open(lock_dir / "nas-device-cpu.gate.lock", "a+") as fh:
        while time.perf_counter() < deadline:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except BlockingIOError:
                return
            time.sleep(0.01)
    raise AssertionError("the measurement never took the gate")


def test_waiting_measurement_stops_new_trainers(lock_dir: Path) -> None:
    """Writer preference: trainers whose epochs overlap cannot starve a measurement."""
    events: list[str] = []
    release_reader = threading.Event()
    reader_in = threading.Event()

    def trainer() -> None:
        with shared_device("cpu", lock_dir=lock_dir):
            reader_in.set()
            release_reader.wait(5)
        events.append("trainer out")

    def measurement() -> None:
        with exclusive_device("cpu", timeout=5, lock_dir=lock_dir):
            events.append("measuring")

    t1 = threading.Thread(target=trainer)
    t1.start()
    assert reader_in.wait(5)
    t2 = threading.Thread(target=measurement)
    t2.start()
    _wait_until_gate_closed(lock_dir)  # the measurement now waits for the trainer
    assert events == []
    with pytest.raises(TimeoutError):  # a new trainer may not slip in
        with shared_device("cpu", timeout=0.2, lock_dir=lock_dir):
            pass
    release_reader.set()
    t1.join(5)
    t2.join(5)
    assert events == ["trainer out", "measuring"]


def test_exclusive_inside_shared_is_an_error(lock_dir: Path) -> None:
    with shared_device("cpu", lock_dir=lock_dir):
        with pytest.raises(RuntimeError, match="shared"):
            with exclusive_device("cpu", lock_dir=lock_dir):
                pass
    with exclusive_device("cpu", lock_dir=lock_dir):
        with exclusive_device("cpu", lock_dir=lock_dir) as again, \
                shared_device("cpu", lock_dir=lock_dir) as inner:
            assert again and inner


def test_lock_across_processes(lock_dir: Path) -> None:
    code = (
        "import sys\n"
        "from nas.measure import shared_device\n"
        f"with shared_device('cpu', lock_dir={str(lock_dir)!r}):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            with exclusive_device("cpu", timeout=0.2, lock_dir=lock_dir):
                pass
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    st = measure_step_time(tiny_net(), **FAST, lock_dir=lock_dir)
    assert st.exclusive


def test_not_exclusive_when_asked(lock_dir: Path) -> None:
    with shared_device("cpu", lock_dir=lock_dir):
        st = measure_step_time(tiny_net(), **FAST, exclusive=False, lock_dir=lock_dir)
    assert not st.exclusive


# --------------------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last(tmp_path: Path) -> None:
    model = tiny_net()
    st = measure_step_time(model, batch=4, resolution=16, num_classes=10, device="cuda",
                           warmup=2, repeats=5, min_time=0.0, lock_dir=tmp_path)
    assert st.device.endswith("|bfloat16|channels_last")
    assert torch.cuda.get_device_name() in st.device
    assert f"cuda {torch.version.cuda}" in st.device
    assert st.peak_memory is not None and st.peak_memory > 0
    assert 0 < st.step_time_p10 <= st.step_time <= st.step_time_p90
    assert next(model.parameters()).device.type == "cpu"  # the caller's copy stayed put


def test_doctests() -> None:
    import doctest

    import nas.measure

    result = doctest.testmod(nas.measure, raise_on_error=False)
    assert result.attempted >= 3 and result.failed == 0
