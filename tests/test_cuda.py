"""CUDA paths: bf16 autocast and channels_last in the proxy trainer, S timed with CUDA events
(peak memory, the device lock keyed on the GPU's UUID), out-of-memory as a candidate's failure,
resident and streamed feeds on the device. Every test skips without CUDA; on a GPU machine:

    python -m pytest -q tests/test_cuda.py

(``benchmarks/gpu_suite.py`` runs them too, with the figures a GPU is needed for.)
"""
from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import RewardSpec, build_model, parse_arch, resolve_arch
from nas.data import Dataset, Split
from nas.data.dataset import ChannelSums
from nas.data.feed import make_feed
from nas.evaluate import evaluate
from nas.measure import device_fingerprint, exclusive_device, measure_step_time
from nas.train import CandidateFailure, ProxyConfig, train

from conftest import TINY_ARCH

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

ROOT = Path(__file__).resolve().parents[1]
# Far beyond any single GPU's memory: ~0.5 GB of activations an image at 384 px.
TOO_BIG = ("efficientnetv2_l", 512, 384)


def colour_data(n: int = 1536, *, classes: int = 4, resolution: int = 32, seed: int = 0) -> Dataset:
    """Images whose class is a colour shift in noise: a few epochs learn it well above chance."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    colours = rng.uniform(-40, 40, (classes, 3)).astype(np.float32)
    x = 128 + colours[y][:, :, None, None] + rng.normal(0, 30, (n, 3, resolution, resolution)).astype(np.float32)
    x = np.clip(x, 0, 255).astype(np.uint8)
    n_train = n * 3 // 4
    mean, std = ChannelSums.of(x[:n_train]).stats()
    return Dataset(name="colours", train=Split.of(torch.from_numpy(x[:n_train]), torch.from_numpy(y[:n_train])),
                   val=Split.of(torch.from_numpy(x[n_train:]), torch.from_numpy(y[n_train:])),
                   num_classes=classes, hflip=True, mean=mean, std=std)


def tiny(classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(parse_arch(TINY_ARCH), num_classes=classes)


def warm_libraries() -> None:
    """cuBLAS and cuDNN keep workspaces from the caching allocator after their first use."""
    net = tiny().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        net(torch.randn(8, 3, 32, 32, device="cuda")).float().sum().backward()
    del net
    gc.collect()
    torch.cuda.synchronize()


def test_trainer_uses_bf16_autocast_and_channels_last_on_cuda():
    model = tiny()
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    result = train(model, colour_data(), ProxyConfig(epochs=3, resolution=32, batch_size=64), device="cuda")
    assert result.accuracy > 0.6, result.epoch_accuracies
    assert (True, torch.bfloat16) in seen  # training steps ran under bf16 autocast
    weight = next(p for p in model.parameters() if p.ndim == 4)
    assert weight.is_cuda and weight.is_contiguous(memory_format=torch.channels_last)
    assert result.images_per_second > 0


def test_trainer_float32_on_cuda_when_asked():
    model = tiny()
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    train(model, colour_data(512), ProxyConfig(epochs=1, resolution=32, batch_size=64, dtype="float32",
                                               channels_last=False), device="cuda")
    assert set(seen) == {torch.float32}
    assert next(p for p in model.parameters() if p.ndim == 4).is_contiguous()


def test_resident_and_streamed_feeds_give_the_same_batches_on_cuda():
    data = colour_data(600, resolution=24)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(3))
    batches = {}
    for resident in (True, False):
        feed = make_feed(data, resolution=16, device=torch.device("cuda"), on_device=resident, batch_rows=64)
        try:
            batches[resident] = [(source[idx].cpu(), y.cpu()) for source, idx, y in feed.train_batches(order, 64)]
            batches[resident] += [(x.cpu(), y.cpu()) for x, y in feed.eval_batches(64)]
        finally:
            feed.close()
    assert len(batches[True]) == len(batches[False])
    for (xa, ya), (xb, yb) in zip(batches[True], batches[False]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_step_time_on_cuda_reports_peak_memory_and_holds_the_lock(tmp_path):
    st = measure_step_time(tiny(10), batch=64, resolution=32, num_classes=10, device="cuda", min_time=0.2,
                           lock_dir=tmp_path)
    assert 0 < st.step_time_p10 <= st.step_time <= st.step_time_p90
    assert st.exclusive is True and st.cached is False
    assert st.peak_memory is not None and 0 < st.peak_memory < torch.cuda.get_device_properties(0).total_memory
    assert st.inference_latency > 0
    assert st.device == device_fingerprint("cuda", dtype=torch.bfloat16, channels_last=True)
    assert st.device.startswith(torch.cuda.get_device_name(0) + "|")
    assert st.device.endswith("|bfloat16|channels_last")


def test_step_time_leaves_the_callers_model_alone():
    model = tiny(10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_step_time(model, batch=32, resolution=32, num_classes=10, device="cuda", min_time=0.1, exclusive=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_the_device_lock_is_named_by_the_gpus_uuid(tmp_path):
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    assert uuid
    with exclusive_device("cuda", lock_dir=tmp_path) as held:
        assert held is True
    names = sorted(p.name for p in tmp_path.iterdir())
    assert f"nas-device-cuda-{uuid}.lock" in names, names
    # cuda and cuda:0 are the same physical GPU: one lock
    with exclusive_device("cuda:0", lock_dir=tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_a_trainer_in_another_process_holds_the_gpu_from_a_measurement(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from nas.measure import shared_device
        with shared_device("cuda", lock_dir={str(tmp_path)!r}):
            print("holding", flush=True)
            time.sleep(4)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(TimeoutError):
            with exclusive_device("cuda", lock_dir=tmp_path, timeout=0.5):
                pass
        t0 = time.perf_counter()
        with exclusive_device("cuda", lock_dir=tmp_path, timeout=60) as held:
            assert held is True
        assert time.perf_counter() - t0 > 1.5  # it waited for the trainer to let go
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def test_out_of_memory_in_training_is_a_candidate_failure_and_frees_the_memory():
    warm_libraries()
    base = torch.cuda.memory_allocated()
    arch, batch, resolution = TOO_BIG
    model = build_model(resolve_arch(arch), num_classes=4)
    with pytest.raises(CandidateFailure) as failure:
        train(model, colour_data(704, classes=4), ProxyConfig(epochs=1, resolution=resolution, batch_size=batch),
              device="cuda")
    assert failure.value.reason.startswith("oom: ")
    del model, failure
    gc.collect()
    assert torch.cuda.memory_allocated() - base <= 2**20
    # and the process trains normally afterwards
    assert train(tiny(), colour_data(512), ProxyConfig(epochs=1, resolution=32, batch_size=64),
                 device="cuda").accuracy > 0


def test_evaluate_records_oom_as_fail_and_then_completes_a_small_candidate(tmp_path):
    warm_libraries()
    base = torch.cuda.memory_allocated()
    arch, batch, resolution = TOO_BIG
    data = colour_data(704, classes=4)  # 528 training images: a full batch of 512
    result = evaluate(resolve_arch(arch), data, ProxyConfig(epochs=1, resolution=resolution, batch_size=batch),
                      RewardSpec(), device="cuda", lock_dir=tmp_path)
    assert result.state == "FAIL" and result.reason.startswith("oom"), result.reason
    assert result.accuracy is None and result.reward is None
    gc.collect()
    assert torch.cuda.memory_allocated() - base <= 2**20
    small = evaluate(parse_arch(TINY_ARCH), colour_data(), ProxyConfig(epochs=2, resolution=32, batch_size=64),
                     RewardSpec(), device="cuda", lock_dir=tmp_path)
    assert small.state == "COMPLETE", small.reason
    assert small.accuracy > 0.5 and small.step_time > 0 and small.exclusive is True
    assert small.peak_memory > 0 and small.device.startswith(torch.cuda.get_device_name(0))
