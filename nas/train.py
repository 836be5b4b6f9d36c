"""The proxy trainer: a few epochs at reduced resolution, the accuracy a search ranks by.

Written in the airbench manner: batches arrive on the device as uint8 (see
:mod:`nas.data.feed`: the whole set resident there when it fits, else streamed from
memory-mapped arrays a few batches ahead), each batch is cut out with one gather that
does the random crop and flip together, and nothing in the hot loop runs per sample in
Python. Failures that belong to the candidate (a diverged loss, out of memory, a model
that does not fit the data) become :class:`CandidateFailure` so a search can record
them and go on.

With a :class:`~nas.progressive.Progressive` schedule (``nas train --progressive``) each
stage trains at its own image size, classifier dropout, RandAugment magnitude and mixup α
(:mod:`nas.augment`, batched on the device like the crop), while evaluation stays at the
final size.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from nas.augment import mixup, rand_augment
from nas.data import Dataset
from nas.data.feed import Feed, make_feed
from nas.progressive import Progressive, Stage

__all__ = [
    "CandidateFailure",
    "ProxyConfig",
    "TrainResult",
    "train",
]

_OPTIMIZERS = ("sgd", "rmsprop")
_DTYPES = ("auto", "float32", "bfloat16")
# On CUDA a loss check is a host sync; every few steps is enough to catch a divergence
# early while keeping the queue full.
_CUDA_CHECK_EVERY = 16
# Below this a network's stride-32 stages see less than a pixel, and the crop padding
# (resolution // 8) vanishes: such a proxy ranks nothing.
_MIN_RESOLUTION = 8

_T = TypeVar("_T")


class CandidateFailure(Exception):
    """A candidate's own failure; ``reason`` starts with ``diverged``, ``oom`` or ``invalid``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProxyConfig:
    """How a candidate is trained by the proxy task.

    Attributes:
        epochs: Passes over the training split.
        resolution: Side of the square images the data is resized to (at least 8).
        batch_size: Training batch size (evaluation uses a larger one).
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"rmsprop"`` (TF-style eps 1e-3).
        lr: Peak learning rate, reached after the warm-up.
        momentum: Momentum of either optimizer.
        weight_decay: L2 on conv/linear weights (not on BN or biases).
        label_smoothing: Cross-entropy label smoothing.
        warmup_epochs: Linear warm-up length; then cosine decay to 0, per step.
        seed: Seeds augmentation, batch order and the model's own randomness.
        max_loss: A loss above this (or non-finite) means the candidate diverged.
        dtype: ``"auto"`` (bfloat16 autocast on CUDA, float32 on CPU), ``"float32"``
            or ``"bfloat16"``.
        channels_last: Memory format; ``None`` = on CUDA only.
        data_on_device: ``"auto"``: the whole data set is kept on the device when it
            fits ``device_memory_share`` of the device's memory (on a CPU: when it is in
            memory already; memory-mapped sets are streamed, never copied whole);
            ``True``: always; ``False``: batches are always streamed. Both ways give the
            same batches under one seed.
        device_memory_share: The share of device memory a resident data set may take.
    """

    epochs: int = 5
    resolution: int = 32
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    seed: int = 0
    max_loss: float = 1e3
    dtype: str = "auto"
    channels_last: bool | None = None
    data_on_device: bool | str = "auto"
    device_memory_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProxyConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) \
                or self.resolution < _MIN_RESOLUTION:
            raise ValueError(f"ProxyConfig.resolution must be an int >= {_MIN_RESOLUTION}, got {self.resolution!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"ProxyConfig.optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"ProxyConfig.dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("momentum", self.momentum, low=0.0, high=1.0)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        _check_float("warmup_epochs", self.warmup_epochs, low=0.0)
        _check_float("max_loss", self.max_loss, low=0.0, low_open=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"ProxyConfig.seed must be an int, got {self.seed!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ValueError(f"ProxyConfig.channels_last must be True, False or None, got {self.channels_last!r}")
        if not isinstance(self.data_on_device, bool) and self.data_on_device != "auto":
            raise ValueError(f"ProxyConfig.data_on_device must be 'auto', True or False, got {self.data_on_device!r}")
        _check_float("device_memory_share", self.device_memory_share, low=0.0, high=1.0, low_open=True,
                     high_closed=True)


def _check_float(name: str, value: object, *, low: float, high: float | None = None, low_open: bool = False,
                 high_closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value <= high if high_closed else value < high))
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low:g}" + (
            f" and {'<=' if high_closed else '<'} {high:g}" if high is not None else "")
        raise ValueError(f"ProxyConfig.{name} must be a finite number {bounds}, got {value!r}")


@dataclass(frozen=True)
class TrainResult:
    """What a proxy training run measured.

    Attributes:
        accuracy: Final validation accuracy, a fraction in [0, 1].
        epoch_accuracies: Validation accuracy after each epoch.
        train_seconds: Wall time of the whole call (data transfer and evaluation included).
        images_per_second: Training throughput over the training steps alone.
    """

    accuracy: float
    epoch_accuracies: tuple[float, ...]
    train_seconds: float
    images_per_second: float


def train(
    model: nn.Module,
    data: Dataset,
    config: ProxyConfig,
    *,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    progressive: Progressive | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with the proxy recipe and report validation accuracy.

    The model is moved to ``device`` and keeps its trained weights (left in eval mode).
    The caller's global RNG state and thread settings are left as they were.

    Args:
        model: The candidate network; outputs ``(batch, data.num_classes)`` logits.
        data: Train and validation splits (uint8 images, in memory or memory-mapped).
        config: The proxy recipe.
        device: Where to train; default CUDA when available, else CPU.
        on_epoch: Called as ``on_epoch(epoch, accuracy)`` after each epoch (from 1);
            whatever it raises (e.g. ``optuna.TrialPruned``) propagates unchanged.
        progressive: Train in the stages of this schedule (``progressive.plan(
            config.epochs, config.resolution)``: per epoch an image size, a dropout rate
            set on ``model.dropout``, a RandAugment magnitude and a mixup α). ``None``:
            every epoch at ``config.resolution`` with the model's own dropout and no
            RandAugment or mixup. Evaluation is at ``config.resolution`` either way.

    Returns:
        The accuracies and timings.

    Raises:
        CandidateFailure: ``diverged: ...``, ``oom: ...`` or ``invalid: ...``.
        ValueError: An empty split; a schedule that does not fit ``config`` or whose
            dropout the model has no ``dropout`` module for.
    """
    dev = torch.device(device) if device is not None else _default_device()
    if len(data.train) == 0 or len(data.val) == 0:
        raise ValueError(f"dataset {data.name!r} has an empty split (train {len(data.train)}, val {len(data.val)})")
    plan = progressive.plan(config.epochs, config.resolution) if progressive is not None else None
    start = time.perf_counter()
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    # Dropout and stochastic depth draw from the global RNG: seed it per candidate for
    # reproducibility, without disturbing the caller's stream. cuDNN picks its fastest
    # kernels for the proxy's fixed shapes, as S's measurement does (nas.measure), so that S
    # is the step time training really has.
    with torch.random.fork_rng(devices=fork_devices), _cudnn_benchmark(dev.type == "cuda"):
        torch.manual_seed(config.seed)
        run = _guarded(lambda: _Run(model, data, config, dev, plan), model, dev, None)
        accuracies: list[float] = []
        for epoch in range(1, config.epochs + 1):
            accuracy = _guarded(lambda: run.epoch(epoch), model, dev, run.release)
            accuracies.append(accuracy)
            # outside the guard: the callback's exceptions (a pruner's) are the caller's
            # business and propagate as they are, after the device data is let go
            if on_epoch is not None:
                try:
                    on_epoch(epoch, accuracy)
                except BaseException:
                    run.release()
                    raise
        images_per_second = run.images_per_second()
        run.release()
    return TrainResult(
        accuracy=accuracies[-1],
        epoch_accuracies=tuple(accuracies),
        train_seconds=time.perf_counter() - start,
        images_per_second=images_per_second,
    )


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    """``torch.backends.cudnn.benchmark`` on for the block (when ``enabled``), then as it was."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _guarded(
    fn: Callable[[], _T], model: nn.Module, dev: torch.device, release: Callable[[], None] | None
) -> _T:
    """Run ``fn``; on the candidate's own failure free its memory, then raise ``CandidateFailure``.

    Out-of-memory errors become ``CandidateFailure("oom: ...")``. The memory is only
    released once the original exception (whose traceback holds the frames and their
    tensors) is gone, so the failure is raised anew after the ``except`` block; other
    errors (bugs) propagate unchanged.
    """
    try:
        return fn()
    except CandidateFailure as exc:
        reason = exc.reason
    except Exception as exc:
        if not _is_oom(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"oom: {first[:200]}"
    if release is not None:
        release()
    model.zero_grad(set_to_none=True)
    gc.collect()
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise CandidateFailure(reason)


class _Run:
    """The state of one proxy training run: the data feed, optimizer, schedule."""

    def __init__(self, model: nn.Module, data: Dataset, config: ProxyConfig, dev: torch.device,
                 plan: tuple[Stage, ...] | None = None) -> None:
        self.config = config
        self.dev = dev
        self.data = data
        self.plan = plan
        self.hflip = data.hflip
        self.num_classes = data.num_classes
        on_cuda = dev.type == "cuda"
        self.amp_dtype = _amp_dtype(config.dtype, on_cuda)
        self.memory_format = (
            torch.channels_last
            if (config.channels_last if config.channels_last is not None else on_cuda)
            else torch.contiguous_format
        )
        self.check_every = _CUDA_CHECK_EVERY if on_cuda else 1

        res = config.resolution
        # no activations are kept for backward, so twice the batch fits where training did
        self.eval_batch = 2 * config.batch_size
        self.feed_options = {"device": dev, "on_device": config.data_on_device,
                             "memory_share": config.device_memory_share, "batch_rows": self.eval_batch}
        self.feed: Feed | None
        if plan is None:
            self.feed = make_feed(data, resolution=res, **self.feed_options)
            self.eval_feed = self.feed
        else:
            # evaluation stays at the final size while training images grow to it; it needs
            # the validation split alone, so a view whose training split is the validation
            # split keeps a resident feed from holding the training set a second time
            self.eval_feed = make_feed(dataclasses.replace(data, train=data.val), resolution=res,
                                       **self.feed_options)
            self.feed = None  # each stage's, made by enter()
        self.stage: Stage | None = None
        self.train_size, self.val_size = len(data.train), len(data.val)
        # normalising is (x - mean) / std in 0..255 units, folded into one multiply-add
        mean = torch.tensor(data.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(data.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / std
        self.shift = -mean / std
        # what RandAugment's warps move into an image: the mean, 0 once normalised
        self.fill = mean

        self.model = model.to(dev, memory_format=self.memory_format)
        # the batch order is drawn on the host, so a streamed feed knows it ahead of time
        # and both feeds see the same order; augmentation draws on the device
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(config.seed)
        # mixup's λ, one scalar per batch, is drawn on the host: mixing by a Python float
        # needs no device sync
        self.mix_rng = random.Random(config.seed)
        needs_dropout = plan is not None and any(stage.dropout > 0 for stage in plan)
        self.dropout = _dropout_module(model, needs_dropout) if plan is not None else None

        n = self.train_size
        self.batch = min(config.batch_size, n)
        # drop the ragged last batch: every step then has one shape (steadier timing,
        # no tiny BN batches)
        self.steps_per_epoch = max(1, n // self.batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = int(round(config.warmup_epochs * self.steps_per_epoch))
        self.step_count = 0
        self.optimizer = _make_optimizer(model, config)
        self.train_time = 0.0
        self.images = 0
        self.crop_for(res)

    # ----------------------------------------------------------------- schedule
    def lr_at(self, step: int) -> float:
        """Linear warm-up to the peak, then cosine to zero; ``step`` counts from 0."""
        peak = self.config.lr
        if step < self.warmup_steps:
            return peak * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    # ----------------------------------------------------------------- stages
    def enter(self, stage: Stage) -> None:
        """Train from now on as ``stage`` says: its image size, dropout rate and augmentation."""
        if self.stage is None or stage.resolution != self.stage.resolution:
            if self.feed is not None:
                self.feed.close()  # the last stage's copy goes before the next is made
                self.feed = None
            # resized once per stage from the full-size data when resident, per batch when streamed
            self.feed = make_feed(self.data, resolution=stage.resolution, **self.feed_options)
            self.crop_for(stage.resolution)
        if self.dropout is not None:
            self.dropout.p = stage.dropout
        self.stage = stage

    # ----------------------------------------------------------------- batches
    def crop_for(self, res: int) -> None:
        """The random crop's constants for training images of side ``res``."""
        self.resolution = res
        self.pad = res // 8
        self.arange = torch.arange(res, device=self.dev)
        self.channel_offsets = torch.arange(3, device=self.dev).view(1, 3, 1, 1) * (res * res)

    def augmented_batch(self, source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Images ``source[idx]``, randomly cropped (reflect padding) and flipped, as one gather of uint8."""
        b, res, pad, g, dev = len(idx), self.resolution, self.pad, self.generator, self.dev
        if pad > 0:
            dy = torch.randint(-pad, pad + 1, (b, 1), device=dev, generator=g)
            dx = torch.randint(-pad, pad + 1, (b, 1), device=dev, generator=g)
        else:
            dy = dx = torch.zeros((b, 1), dtype=torch.long, device=dev)
        rows = _reflect(self.arange + dy, res)
        cols = self.arange.expand(b, res)
        if self.hflip:
            flip = torch.rand((b, 1), device=dev, generator=g) < 0.5
            cols = torch.where(flip, res - 1 - cols, cols)
        cols = _reflect(cols + dx, res)
        # one flat gather is ~3x faster than 4-tensor advanced indexing on CPU
        flat = (
            idx.view(b, 1, 1, 1) * (3 * res * res)
            + self.channel_offsets
            + rows.view(b, 1, res, 1) * res
            + cols.view(b, 1, 1, res)
        )
        return source.view(-1)[flat]

    def prepare(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, x_uint8.float(), self.scale)
        return x.contiguous(memory_format=self.memory_format)

    def autocast(self) -> torch.autocast:
        enabled = self.amp_dtype is not None
        return torch.autocast(self.dev.type, dtype=self.amp_dtype or torch.bfloat16, enabled=enabled)

    # ----------------------------------------------------------------- one epoch
    def epoch(self, epoch: int) -> float:
        """Train one epoch (in its stage, when progressive), then return the validation accuracy."""
        if self.plan is not None:
            self.enter(self.plan[epoch - 1])
        self.train_one_epoch(epoch)
        return self.evaluate()

    def train_one_epoch(self, epoch: int) -> None:
        model, opt, cfg, stage = self.model, self.optimizer, self.config, self.stage
        assert self.feed is not None, "a progressive run enters its stage before training"
        randaug = stage.randaug if stage is not None else 0.0
        alpha = stage.mixup if stage is not None else 0.0
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(self.train_size, generator=self.order_generator)
        last = self.steps_per_epoch - 1
        with contextlib.closing(self.feed.train_batches(order, self.batch)) as batches:
            for step, (source, idx, y) in enumerate(batches):
                x = self.augmented_batch(source, idx)
                if randaug > 0:
                    x = rand_augment(x, randaug, generator=self.generator, fill=self.fill)
                x = self.prepare(x)
                target = y
                if alpha > 0:
                    x, target = mixup(x, y, self.mix_rng.betavariate(alpha, alpha), num_classes=self.num_classes)
                lr = self.lr_at(self.step_count)
                for group in opt.param_groups:
                    group["lr"] = lr
                with self.autocast():
                    logits = model(x)
                if self.step_count == 0:
                    self.check_output(logits, len(idx))
                # smoothing mixup's soft targets is smoothing each label before the mix
                loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
                if step % self.check_every == 0 or step == last:
                    value = loss.item()
                    if not math.isfinite(value) or value > cfg.max_loss:
                        raise CandidateFailure(f"diverged: loss {value:.3g} at epoch {epoch} step {step + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.step_count += 1
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self.train_time += time.perf_counter() - t0
        self.images += self.steps_per_epoch * self.batch

    def check_output(self, logits: torch.Tensor, batch: int) -> None:
        expected = (batch, self.num_classes)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise CandidateFailure(f"invalid: model output {shape}, expected {expected} logits")

    @torch.inference_mode()
    def evaluate(self) -> float:
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.dev)
        with contextlib.closing(self.eval_feed.eval_batches(self.eval_batch)) as batches:
            for images, labels in batches:
                with self.autocast():
                    logits = self.model(self.prepare(images))
                correct += (logits.argmax(dim=1) == labels).sum()
        return correct.item() / self.val_size

    def release(self) -> None:
        """Drop the data feeds (device copies, buffers, threads) and the optimizer state (the model stays)."""
        for feed in {id(f): f for f in (self.feed, self.eval_feed) if f is not None}.values():
            feed.close()
        self.optimizer = None  # type: ignore[assignment]

    def images_per_second(self) -> float:
        return self.images / self.train_time if self.train_time > 0 else 0.0


def _amp_dtype(dtype: str, on_cuda: bool) -> torch.dtype | None:
    if dtype == "bfloat16" or (dtype == "auto" and on_cuda):
        return torch.bfloat16
    return None


def _dropout_module(model: nn.Module, required: bool) -> nn.Dropout | None:
    """``model.dropout``, the classifier dropout a progressive schedule raises, as an ``nn.Dropout``.

    An ``nn.Identity`` there (``nas.builder.EfficientNet`` built with dropout 0) is
    replaced by an ``nn.Dropout`` so the schedule can raise it. Without either, ``None``
    when the schedule keeps dropout at 0 (``required`` false), else a ``ValueError``.
    """
    module = getattr(model, "dropout", None)
    if isinstance(module, nn.Identity):
        module = nn.Dropout(0.0)
        model.dropout = module
    if isinstance(module, nn.Dropout):
        return module
    if required:
        raise ValueError(f"a progressive dropout schedule needs model.dropout (an nn.Dropout or nn.Identity, as "
                         f"nas.builder.EfficientNet has); {type(model).__name__} has none: keep dropout at 0:0")
    return None


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect out-of-range indices back into ``[0, size)`` (padding without a pad copy)."""
    if size == 1:
        return torch.zeros_like(index)
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index).clamp_(0, size - 1)


def _make_optimizer(model: nn.Module, config: ProxyConfig) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        # BN scales/shifts and biases are 1-D: decaying them only hurts
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise CandidateFailure("invalid: model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    # TF's RMSProp: decay 0.9, eps 1e-3 (torch's default 1e-8 is unstable for nets like these)
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.9, eps=1e-3, momentum=config.momentum)
