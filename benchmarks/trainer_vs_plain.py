"""Proxy trainer vs. a plain PyTorch loop: same model, data, recipe; wall time and accuracy.

The plain loop is what one writes first: a ``TensorDataset`` and a ``DataLoader``
(pinned memory on CUDA), a per-sample crop/flip in the collate function (as torchvision
transforms would do), data copied to the device batch by batch. ``nas.train.train`` keeps
the data on the device and augments whole batches with one gather. Both train the same
initial weights with the same optimizer, schedule, label smoothing, epochs and (on CUDA)
bf16 autocast and channels_last; on CUDA the plain loop also runs in float32 NCHW
(``plain_float32``). ``benchmarks/gpu_suite.py`` reuses :func:`plain_train`.

    python benchmarks/trainer_vs_plain.py --epochs 5 --batch 32 --resolution 32
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.data import Dataset, load_dataset  # noqa: E402
from nas.train import ProxyConfig, train  # noqa: E402

ARCH = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 mb_r2_k3_s2_e4_c64_se0.25 head_c256"


def _tiny_model(num_classes: int) -> nn.Module:
    def conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True)]

    return nn.Sequential(
        *conv_bn(3, 16, 1), *conv_bn(16, 32, 2), *conv_bn(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def build(num_classes: int) -> tuple[nn.Module, str]:
    """The benchmark model: the acceptance arch, or a tiny stand-in if the builder is missing."""
    try:
        import nas

        return nas.build_model(nas.parse_arch(ARCH), num_classes=num_classes), ARCH
    except (ImportError, AttributeError) as exc:
        print(f"nas.build_model unavailable ({exc}); using a tiny conv net", file=sys.stderr)
        return _tiny_model(num_classes), "tiny-convnet"


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    down = resolution < min(x.shape[-2:])
    y = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=down)
    return y.round().clamp(0, 255).to(torch.uint8)


def plain_train(model: nn.Module, data: Dataset, config: ProxyConfig, device: torch.device, *,
                bfloat16: bool | None = None, channels_last: bool | None = None) -> dict[str, Any]:
    """The textbook loop, same recipe as ``nas.train.train``.

    ``bfloat16`` (autocast) and ``channels_last`` default to what the proxy trainer does:
    on CUDA only. ``False`` for both gives the plain float32 NCHW loop.
    """
    on_cuda = device.type == "cuda"
    bfloat16 = on_cuda if bfloat16 is None else bfloat16
    channels_last = on_cuda if channels_last is None else channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
    res, pad = config.resolution, config.resolution // 8
    mean = torch.tensor(data.mean).view(3, 1, 1) * 255
    std = torch.tensor(data.std).view(3, 1, 1) * 255
    gen = torch.Generator().manual_seed(config.seed)

    def augment(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = []
        for img, _ in batch:  # per sample, as torchvision transforms work
            img = F.pad(img.float().unsqueeze(0), (pad, pad, pad, pad), mode="reflect").squeeze(0)
            top, left = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
            img = img[:, top:top + res, left:left + res]
            if data.hflip and torch.rand(1, generator=gen).item() < 0.5:
                img = img.flip(2)
            images.append((img - mean) / std)
        return torch.stack(images), torch.stack([y for _, y in batch])

    def normalise(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([img for img, _ in batch]).float()
        return (x - mean) / std, torch.stack([y for _, y in batch])

    train_set = TensorDataset(_resize(data.train_x, res), data.train_y)
    val_set = TensorDataset(_resize(data.val_x, res), data.val_y)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        collate_fn=augment, generator=gen, pin_memory=on_cuda)
    val_loader = DataLoader(val_set, batch_size=2 * config.batch_size, collate_fn=normalise,
                            pin_memory=on_cuda)

    model = model.to(device, memory_format=fmt)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=config.lr, momentum=config.momentum, nesterov=True)
    steps = len(loader)
    total, warm = steps * config.epochs, int(round(config.warmup_epochs * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    accuracies, train_time, images = [], 0.0, 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(device, non_blocking=True)
            with amp:
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
        if on_cuda:
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                with amp:
                    out = model(x.to(device).contiguous(memory_format=fmt))
                correct += int((out.argmax(1).cpu() == y).sum())
        accuracies.append(correct / len(val_set))
    return {
        "seconds": time.perf_counter() - start,
        "images_per_second": images / train_time,
        "accuracy": accuracies[-1],
        "epoch_accuracies": accuracies,
        "dtype": "bfloat16" if bfloat16 else "float32",
        "channels_last": channels_last,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed warm-up epoch (kernel selection / oneDNN JIT)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/trainer_vs_plain.json"))
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_dataset("digits")
    config = ProxyConfig(epochs=args.epochs, resolution=args.resolution, batch_size=args.batch)
    torch.manual_seed(0)
    initial, arch = build(data.num_classes)

    if not args.no_warmup:
        # both loops then meet warm kernels: the first run of a shape pays one-off costs
        train(copy.deepcopy(initial), data, ProxyConfig(epochs=1, resolution=args.resolution,
                                                       batch_size=args.batch), device=device)

    # CPU seconds (all threads) next to wall seconds: on a shared machine the wall time
    # swings with the neighbours' load, the CPU time much less
    cpu0 = time.process_time()
    ours = train(copy.deepcopy(initial), data, config, device=device)
    cpu1 = time.process_time()
    plain = plain_train(copy.deepcopy(initial), data, config, device)
    plain["cpu_seconds"] = time.process_time() - cpu1
    plain_float32 = None
    if device.type == "cuda":
        # the loop as first written, before any mixed precision or memory-format work
        plain_float32 = plain_train(copy.deepcopy(initial), data, config, device, bfloat16=False,
                                    channels_last=False)
    result = {
        "benchmark": "trainer_vs_plain",
        "arch": arch,
        "dataset": "digits",
        "epochs": args.epochs,
        "batch": args.batch,
        "resolution": args.resolution,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ours": {
            "seconds": ours.train_seconds,
            "cpu_seconds": cpu1 - cpu0,
            "images_per_second": ours.images_per_second,
            "accuracy": ours.accuracy,
            "epoch_accuracies": list(ours.epoch_accuracies),
        },
        "plain": plain,
        "plain_float32": plain_float32,
        "ratio_plain_over_ours": plain["seconds"] / ours.train_seconds,
        "cpu_ratio_plain_over_ours": plain["cpu_seconds"] / (cpu1 - cpu0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
