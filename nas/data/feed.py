"""Training batches to the device: resident, or streamed from memory-mapped arrays.

Resident (airbench's way, the fast path): the whole split is copied to the device once,
resized once, and every batch is one gather out of it. Streamed (FFCV's way, for a set
that does not fit the device's share, or one that is memory-mapped on a CPU): a
background thread gathers each batch's rows from the map into a host buffer (pinned on
CUDA) a few batches ahead; the buffer goes to the device without blocking and is resized
there. A trial's own memory then holds a few batches, never the data set.

Both paths give the trainer the same thing, a uint8 source on the device and the
positions of a batch in it, so the batched crop and flip that follow are one code path:
under one seed the two paths give bit-identical batches.
"""
from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from typing import Iterator

import torch
import torch.nn.functional as F

from nas.data.dataset import Dataset, Split

__all__ = ["Feed", "make_feed", "resize_uint8"]

_PREFETCH = 3            # batches gathered ahead of the one in training
_FILL_CHUNK = 2048       # images moved (and resized) at a time when filling the device
_RESIZE_BYTES = 32 << 20  # float images resized at a time


class Feed(ABC):
    """Where a trainer gets its batches: uint8 images at the proxy resolution, on the device."""

    @abstractmethod
    def train_batches(self, order: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch: per step ``(source, positions, labels)``; the batch is ``source[positions]``.

        Args:
            order: A permutation of the training set (CPU int64); step ``s`` takes
                ``order[s * batch:(s + 1) * batch]``, the ragged end is dropped.
            batch: Images per step.

        The tensors of a step stay valid until the next step is asked for.
        """

    @abstractmethod
    def eval_batches(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation split in order, as ``(images, labels)`` of at most ``batch``."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the device copies, buffers and any background thread."""


def make_feed(
    data: Dataset,
    *,
    resolution: int,
    device: torch.device,
    on_device: bool | str = "auto",
    memory_share: float = 0.25,
    batch_rows: int = 256,
) -> Feed:
    """The feed for ``data`` on ``device``.

    Args:
        data: The data set (tensors in memory, or memory maps).
        resolution: The proxy resolution; the images are resized to it on the device.
        device: Where training runs.
        on_device: ``True``: resident (the whole set copied to the device); ``False``:
            streamed; ``"auto"``: resident on CUDA when train + validation at
            ``resolution`` fit ``memory_share`` of the device's memory, and elsewhere when
            the data is already in memory (a map is streamed, never copied whole).
        memory_share: The share of device memory a resident set may take.
        batch_rows: The largest batch that will be asked for (sizes the stream's buffers).
    """
    resident = on_device if isinstance(on_device, bool) else _fits(data, resolution, device, memory_share)
    if resident:
        return _Resident(data, resolution, device)
    return _Streamed(data, resolution, device, batch_rows)


def _fits(data: Dataset, resolution: int, device: torch.device, share: float) -> bool:
    if device.type == "cuda":
        need = (len(data.train) + len(data.val)) * (3 * resolution * resolution + 8)
        return need <= share * torch.cuda.get_device_properties(device).total_memory
    return not (data.train.mapped or data.val.mapped)


def resize_uint8(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 ``(N, 3, H, W)`` images to ``resolution`` (bilinear, antialiased down), staying uint8.

    Each image's result depends on that image alone, so resizing a whole set once and
    resizing it batch by batch give the same pixels. The float copy the interpolation
    needs is made a few images at a time, so a batch of large stored images never takes
    a float copy of its own size.
    """
    if tuple(x.shape[2:]) == (resolution, resolution):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], resolution, resolution), dtype=torch.uint8, device=x.device)
    downscale = resolution < min(x.shape[2], x.shape[3])
    rows = max(1, _RESIZE_BYTES // (4 * x[0].numel()))
    for start in range(0, x.shape[0], rows):
        resized = F.interpolate(x[start:start + rows].float(), size=(resolution, resolution), mode="bilinear",
                                align_corners=False, antialias=downscale)
        out[start:start + rows] = resized.round_().clamp_(0, 255)
    return out


# --------------------------------------------------------------------------- resident


class _Resident(Feed):
    """The whole set on the device at the proxy resolution; a batch is a gather from it."""

    def __init__(self, data: Dataset, resolution: int, device: torch.device) -> None:
        self.train_x, self.train_y = _on_device(data.train, resolution, device)
        self.val_x, self.val_y = _on_device(data.val, resolution, device)

    def train_batches(self, order: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = order.to(self.train_x.device)
        for step in range(len(order) // batch):
            idx = order[step * batch:(step + 1) * batch]
            yield self.train_x, idx, self.train_y[idx]

    def eval_batches(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.val_x), batch):
            yield self.val_x[start:start + batch], self.val_y[start:start + batch]

    def close(self) -> None:
        self.train_x = self.train_y = self.val_x = self.val_y = None  # type: ignore[assignment]


def _on_device(split: Split, resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as one uint8 tensor at ``resolution`` on ``device`` (and its labels), filled in chunks."""
    if not split.mapped and len(split.parts) == 1 and device.type == "cpu" \
            and split.image_shape[1:] == (resolution, resolution) and split.x.is_contiguous():
        return split.x, split.y  # already where and as it must be: no copy
    n = len(split)
    x_out = torch.empty((n, 3, resolution, resolution), dtype=torch.uint8, device=device)
    y_out = torch.empty(n, dtype=torch.int64, device=device)
    rows = min(n, _FILL_CHUNK)
    x_host = torch.empty((rows, *split.image_shape), dtype=torch.uint8)
    y_host = torch.empty(rows, dtype=torch.int64)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        split.gather(torch.arange(start, stop), x_host[:stop - start], y_host[:stop - start])
        # a blocking copy: the host buffer is refilled right after
        x_out[start:stop] = resize_uint8(x_host[:stop - start].to(device), resolution)
        y_out[start:stop] = y_host[:stop - start].to(device)
    return x_out, y_out


# --------------------------------------------------------------------------- streamed


class _Streamed(Feed):
    """Batches gathered from the split by a background thread, a few ahead, resized on the device."""

    def __init__(self, data: Dataset, resolution: int, device: torch.device, batch_rows: int) -> None:
        assert data.train.image_shape == data.val.image_shape, "train and validation images share a shape"
        self.train, self.val, self.resolution, self.device = data.train, data.val, resolution, device
        rows = min(batch_rows, max(len(data.train), len(data.val)))
        pinned = device.type == "cuda"
        self.slots = [_Slot(rows, data.train.image_shape, pinned) for _ in range(_PREFETCH + 1)]
        self.positions = torch.arange(rows, device=device)
        self.active: _Prefetcher | None = None

    def train_batches(self, order: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = [order[step * batch:(step + 1) * batch] for step in range(len(order) // batch)]
        for x, y in self._stream(self.train, batches):
            yield resize_uint8(x, self.resolution), self.positions[:len(x)], y

    def eval_batches(self, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.val)
        batches = [torch.arange(start, min(n, start + batch)) for start in range(0, n, batch)]
        for x, y in self._stream(self.val, batches):
            yield resize_uint8(x, self.resolution), y

    def _stream(self, split: Split, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.active = _Prefetcher(split, batches, self.slots, self.device)
        try:
            yield from self.active
        finally:
            self.active.stop()
            self.active = None

    def close(self) -> None:
        if self.active is not None:
            self.active.stop()
        self.slots = []


class _Slot:
    """A host buffer for one batch; on CUDA pinned, with an event marking its copy to the device done."""

    def __init__(self, rows: int, image_shape: tuple[int, int, int], pinned: bool) -> None:
        # zeros, not empty: every page is touched now, so a trial's memory is the same
        # whichever batch sizes come first
        self.x = torch.zeros((rows, *image_shape), dtype=torch.uint8, pin_memory=pinned)
        self.y = torch.zeros(rows, dtype=torch.int64, pin_memory=pinned)
        self.copied = torch.cuda.Event() if pinned else None

    def wait_copied(self) -> None:
        if self.copied is not None:
            self.copied.synchronize()


class _Prefetcher:
    """Fills slots with the given batches in a background thread; iterating yields them on the device."""

    def __init__(self, split: Split, batches: list[torch.Tensor], slots: list[_Slot], device: torch.device) -> None:
        self.device = device
        self.free: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self.ready: queue.SimpleQueue[tuple[_Slot, int] | BaseException | None] = queue.SimpleQueue()
        for slot in slots:
            self.free.put(slot)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(split, batches), name="nas-prefetch", daemon=True)
        self.thread.start()

    def _fill(self, split: Split, batches: list[torch.Tensor]) -> None:
        try:
            for idx in batches:
                slot = self.free.get()
                if slot is None or self.stopping.is_set():
                    return
                slot.wait_copied()  # its previous batch has reached the device
                split.gather(idx, slot.x[:len(idx)], slot.y[:len(idx)])
                self.ready.put((slot, len(idx)))
            self.ready.put(None)
        except BaseException as exc:  # handed to the training thread, raised there
            self.ready.put(exc)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        held: _Slot | None = None
        while True:
            if held is not None:
                self.free.put(held)  # asking for the next batch means the last one is done with
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            held, n = item
            x = held.x[:n].to(self.device, non_blocking=True)
            y = held.y[:n].to(self.device, non_blocking=True)
            if held.copied is not None:
                held.copied.record()
            yield x, y

    def stop(self) -> None:
        self.stopping.set()
        self.free.put(None)  # wakes the thread if it waits for a slot
        self.thread.join()
