"""One network at a time: ``evaluate``, ``measure``, ``train``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from nas.cli._common import cell, epoch_progress, print_json, resolve_arch

if TYPE_CHECKING:  # the command line imports torch-backed modules only when a command runs
    from nas.progressive import Progressive, Stage

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="train and score one candidate (A, S, P, reward)")
    p.add_argument("arch")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch the data set (checksummed) if missing")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "rmsprop"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", metavar="ARCH", help="S0/P0 from this arch (default: the arch itself, reward = A)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true", help="measure S again even if cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("measure", help="S: the training-step time of an arch on this device")
    p.add_argument("arch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_measure)

    p = sub.add_parser("train", help="train one network longer, on all training data (the step after a search)")
    p.add_argument("arch", help="a baseline name, an arch string, a file holding one, or a run directory")
    p.add_argument("--trial", default="best", help="with a run directory: a trial number or 'best' (default)")
    p.add_argument("--dataset", help="default: the run's, else digits")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch the data set (checksummed) if missing")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--resolution", type=int, help="default: the run's proxy resolution, else 32")
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["sgd", "rmsprop"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", metavar="F.pt", help="save the trained network as a state_dict export")
    p.add_argument("--progressive", action="store_true",
                   help="progressive learning (EfficientNetV2 §4): image size, dropout, RandAugment and mixup rise "
                        "together over the stages; evaluation at --resolution")
    p.add_argument("--stages", type=int, help="progressive: number of stages (default 4, as EfficientNetV2)")
    p.add_argument("--start-resolution", type=int, metavar="R",
                   help="progressive: the first stage's image size (default half of --resolution, a multiple of 8)")
    p.add_argument("--dropout", metavar="A:B", help="progressive: classifier dropout rate from A to B "
                                                    "(default 0.1:0.3, EfficientNetV2-S)")
    p.add_argument("--randaug", metavar="A:B", help="progressive: RandAugment magnitude from A to B, 0..30 "
                                                    "(default 5:15, EfficientNetV2-S)")
    p.add_argument("--mixup", metavar="A:B", help="progressive: mixup alpha from A to B (default 0:0, "
                                                  "EfficientNetV2-S; V2-M uses 0:0.2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_train)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nas.data import load_dataset
    from nas.evaluate import evaluate
    from nas.reward import reward_preset
    from nas.runtime import RuntimeOptions
    from nas.train import ProxyConfig

    arch = resolve_arch(args.arch)
    reference = resolve_arch(args.reference) if args.reference else None
    overrides = {k: v for k, v in (("batch_size", args.batch), ("lr", args.lr), ("optimizer", args.optimizer)) if v is not None}
    proxy = ProxyConfig(epochs=args.epochs, resolution=args.resolution, seed=args.seed, **overrides)
    data = load_dataset(args.dataset, data_dir=args.data_dir, download=args.download, seed=0,
                        resolution=args.resolution if args.dataset in ("imagefolder", "synthetic") else None)
    runtime = RuntimeOptions.from_environment()
    cache = None if args.no_cache else runtime.step_time_cache()
    device = None if args.device == "auto" else args.device
    progress = epoch_progress(args.epochs)
    result = evaluate(arch, data, proxy, reward_preset("efficientnetv2"), reference=reference, device=device,
                      cache=cache, on_epoch=progress, lock_dir=runtime.lock_dir)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.arch)
        for key in ("state", "reason", "accuracy", "step_time", "params", "macs", "reward", "device"):
            value = getattr(result, key)
            if value is not None:
                print(f"  {key:10s} {cell(value)}")
    return 0 if result.state == "COMPLETE" or args.json else 1


def cmd_measure(args: argparse.Namespace) -> int:
    from nas.evaluate import measure_arch
    from nas.runtime import RuntimeOptions
    from nas.train import ProxyConfig

    arch = resolve_arch(args.arch)
    proxy = ProxyConfig(batch_size=args.batch, resolution=args.resolution, dtype=args.dtype)
    device = None if args.device == "auto" else args.device
    runtime = RuntimeOptions.from_environment()
    step = measure_arch(arch, num_classes=args.num_classes, proxy=proxy, device=device,
                        cache=None if args.no_cache else runtime.step_time_cache(), lock_dir=runtime.lock_dir)
    data = {"arch": str(arch), **step.to_dict()}
    if args.json:
        print_json(data)
    else:
        print(f"{arch}\n  step time {step.step_time * 1e3:.2f} ms (p10 {step.step_time_p10 * 1e3:.2f}, "
              f"p90 {step.step_time_p90 * 1e3:.2f}) at batch {args.batch}, {args.resolution}px\n  device {step.device}"
              f"{'  (cached)' if step.cached else ''}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from nas.builder import build_model
    from nas.cost import model_cost
    from nas.data import load_dataset
    from nas.export import check_writable, save_state_dict
    from nas.train import CandidateFailure, ProxyConfig, train

    progressive = _progressive(args)  # before anything is loaded: a bad option is one line, at once
    _steady_malloc()
    if args.out:
        check_writable(args.out)  # before training: a finished network must not be lost to a bad path
    arch, source = _train_arch(args)
    resolution = args.resolution or source.get("resolution") or 32
    overrides = {k: v for k, v in (("batch_size", args.batch), ("lr", args.lr), ("optimizer", args.optimizer))
                 if v is not None}
    config = ProxyConfig(epochs=args.epochs, resolution=resolution, seed=args.seed, **overrides)
    if progressive is not None and (progressive.start_resolution or 0) > resolution:
        raise ValueError(f"--start-resolution {progressive.start_resolution} exceeds the final size "
                         f"(--resolution {resolution})")
    plan = progressive.plan(config.epochs, resolution) if progressive is not None else None
    data = load_dataset(source["dataset"], data_dir=source["data_dir"], download=args.download, seed=0,
                        split="final",
                        resolution=resolution if source["dataset"] in ("imagefolder", "synthetic") else None)
    torch.manual_seed(args.seed)
    model = build_model(arch, num_classes=data.num_classes)
    held_out = "test" if data.val_is_test else "held-out"
    sizes = (f"{resolution}px" if plan is None else
             f"{plan[0].resolution}px rising to {resolution}px in {plan[0].stages} stages (progressive; evaluated "
             f"at {resolution}px)")
    print(f"training {arch} on {source['dataset']} ({len(data.train):,} training images; {held_out} set of "
          f"{len(data.val):,}) for {args.epochs} epochs at {sizes}", file=sys.stderr, flush=True)

    what = f"{held_out} accuracy"
    try:
        result = train(model, data, config, device=None if args.device == "auto" else args.device,
                       on_epoch=epoch_progress(args.epochs, what) if plan is None else _stage_progress(plan, what),
                       progressive=progressive)
    except CandidateFailure as failure:
        print(f"nas train: {arch}: {failure.reason}", file=sys.stderr)
        return 1
    cost = model_cost(arch, resolution, data.num_classes)
    if args.out:
        save_state_dict(model, args.out, arch=str(arch), num_classes=data.num_classes, resolution=resolution,
                        trained=True, dataset=source["dataset"], split="final", epochs=args.epochs,
                        accuracy=result.accuracy)
    info = {"arch": str(arch), "dataset": source["dataset"], "split": "final", "epochs": args.epochs,
            "resolution": resolution, "accuracy": result.accuracy, "accuracy_on": held_out,
            "epoch_accuracies": list(result.epoch_accuracies), "history": _history(result.epoch_accuracies, plan,
                                                                                 resolution),
            "progressive": _progressive_info(progressive, plan), "params": cost.params, "macs": cost.macs,
            "train_seconds": result.train_seconds, "images_per_second": result.images_per_second,
            "out": str(args.out) if args.out else None}
    if args.json:
        print_json(info)
    else:
        print(arch)
        print(f"  {held_out} accuracy {result.accuracy:.4f} after {args.epochs} epochs at {sizes} on "
              f"{source['dataset']} (trained on all training data), {result.train_seconds:.1f} s")
        print(f"  params {cost.params:,}  MACs {cost.macs / 1e6:.2f} M" + (f"\n  saved {args.out}" if args.out else ""))
    return 0


def _steady_malloc() -> None:
    """Keep glibc's malloc from returning freed memory to the system and faulting it in again each step.

    glibc moves its mmap threshold to the sizes a process frees; when tensor sizes change
    (progressive stages), large activations keep being mapped and unmapped, and every page
    of them faults in anew at every step: on a CPU, steps at 32 px ran ~30 % slower after
    a smaller size had trained. Fixed thresholds (32 MiB, glibc's largest, and trimming
    only past 1 GiB free) keep freed memory in the heap for the next step. A no-op on
    other C libraries.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)  # the process's own C library
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


# the progressive options, as Progressive's fields
_PROGRESSIVE_FLAGS = {"stages": "--stages", "start_resolution": "--start-resolution", "dropout": "--dropout",
                      "randaug": "--randaug", "mixup": "--mixup"}


def _progressive(args: argparse.Namespace) -> Progressive | None:
    """``--progressive`` and its options as a :class:`~nas.progressive.Progressive`, or ``None``.

    Raises:
        ValueError: naming the option: a range that is not ``A:B`` (or one number, for a
            constant), out of bounds or falling; an option given without ``--progressive``.
    """
    from nas.progressive import Progressive

    given = {field: getattr(args, field) for field in _PROGRESSIVE_FLAGS if getattr(args, field) is not None}
    if not args.progressive:
        if given:
            raise ValueError(f"{_PROGRESSIVE_FLAGS[next(iter(given))]} needs --progressive")
        return None
    options: dict[str, Any] = {}
    for field, value in given.items():
        flag = _PROGRESSIVE_FLAGS[field]
        option = _range(flag, value) if isinstance(value, str) else value
        try:  # one option at a time, so the message names the one at fault
            Progressive(**{field: option})
        except ValueError as err:
            raise ValueError(f"{flag} {value}: {err}") from None
        options[field] = option
    return Progressive(**options)


def _range(flag: str, text: str) -> tuple[float, float]:
    """``A:B`` (or ``A``, for ``A:A``) as two floats."""
    try:
        values = [float(part) for part in text.split(":")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ValueError(f"{flag} {text}: expected START:END, two numbers such as 0.1:0.3 (or one, for a constant)")
    return values[0], values[1]


def _stage_progress(plan: Sequence[Stage], what: str) -> Callable[[int, float], None]:
    """A line per epoch on stderr naming the epoch's stage, image size and regularisation."""
    epochs = len(plan)

    def show(epoch: int, accuracy: float) -> None:
        s = plan[epoch - 1]
        print(f"  epoch {epoch}/{epochs} (stage {s.index + 1}/{s.stages}: {s.resolution}px, dropout {s.dropout:.3g}, "
              f"randaug {s.randaug:.3g}, mixup {s.mixup:.3g}): {what} {accuracy:.4f}", file=sys.stderr, flush=True)
    return show


def _history(accuracies: Sequence[float], plan: Sequence[Stage] | None, resolution: int) -> list[dict[str, Any]]:
    """Per epoch: its number, training image size and accuracy (and, progressive, its stage's settings)."""
    history = []
    for epoch, accuracy in enumerate(accuracies, start=1):
        if plan is None:
            history.append({"epoch": epoch, "resolution": resolution, "accuracy": accuracy})
            continue
        s = plan[epoch - 1]
        history.append({"epoch": epoch, "stage": s.index + 1, "resolution": s.resolution, "accuracy": accuracy,
                        "dropout": s.dropout, "randaug": s.randaug, "mixup": s.mixup})
    return history


def _progressive_info(progressive: Progressive | None, plan: Sequence[Stage] | None) -> dict[str, Any] | None:
    """The schedule as ``nas train --json`` reports it (``None`` without ``--progressive``)."""
    if progressive is None:
        return None
    return {"stages": plan[0].stages, "start_resolution": plan[0].resolution,
            "dropout": list(progressive.dropout), "randaug": list(progressive.randaug),
            "mixup": list(progressive.mixup)}


def _train_arch(args: argparse.Namespace):
    """ARCH for ``nas train`` and where its data is: an arch, a baseline, a file, or a run directory.

    A run directory gives its ``--trial``'s arch and, unless overridden, the run's data set,
    data folder and proxy resolution.
    """
    from nas.study import RunDir

    if Path(args.arch).is_dir() and RunDir(args.arch).exists():
        from nas.arch import parse_arch
        from nas.export import find_trial

        config = RunDir(args.arch).read_config()
        row = find_trial(args.arch, args.trial)
        same_data = args.dataset is None or args.dataset == config.get("dataset")
        source = {"dataset": args.dataset or config.get("dataset", "digits"),
                  "data_dir": args.data_dir or (config.get("data_dir") if same_data else None),
                  "resolution": (config.get("proxy") or {}).get("resolution")}
        return parse_arch(row["arch"]), source
    return resolve_arch(args.arch), {"dataset": args.dataset or "digits", "data_dir": args.data_dir,
                                     "resolution": None}
