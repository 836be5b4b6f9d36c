"""Data sets as uint8 images, ready for the device: in memory, or memory-mapped.

Every data set is served as 3-channel uint8 images ``(N, 3, H, W)`` (grayscale is
replicated) with int64 labels, so one architecture fits every data set. The ``search``
split carves a validation set out of the *training* data (the papers' minival) so that
the test split is never looked at during a search; the ``final`` split trains on all
training data and validates on the official test split.

Small sets (digits, CIFAR, MNIST, an ``.npz``, an image folder, synthetic noise) are
loaded into memory. Large ones are prepared once (:func:`prepare`, ``nas data prepare``)
into ``.npy`` files that ``load_dataset("prepared", data_dir=...)`` memory-maps
read-only, so every trial on a host shares one page-cache copy.

Modules: :mod:`~nas.data.dataset` (the :class:`Dataset` and :class:`Split` every reader
returns), :mod:`~nas.data.sources` (readers of each source format),
:mod:`~nas.data.prepared` (the prepared format: map it, verify it),
:mod:`~nas.data.writer` (write it: ``nas data prepare``), :mod:`~nas.data.feed` (batches to the
device, resident or streamed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.data.dataset import ChannelSums, DataError, Dataset, Split
from nas.data.prepared import Manifest, open_prepared, read_manifest, verify_prepared
from nas.data.sources import LOADERS, Raw, SourceArgs
from nas.data.writer import PrepareResult, prepare

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "Manifest",
    "PrepareResult",
    "Split",
    "load_dataset",
    "open_prepared",
    "prepare",
    "read_manifest",
    "verify_prepared",
]

DATASETS: tuple[str, ...] = (
    "digits",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "imagefolder",
    "npz",
    "prepared",
    "synthetic",
)
assert set(LOADERS) | {"prepared"} == set(DATASETS), "every data set has its reader"


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "search",
    val_fraction: float = 0.2,
    seed: int = 0,
    download: bool = False,
    resolution: int | None = None,
    num_classes: int = 10,
    size: int = 1024,
) -> Dataset:
    """Load a data set and split it into train and validation parts.

    Args:
        name: One of ``DATASETS``.
        data_dir: Where the files are: for ``npz`` the file; for ``imagefolder`` the
            folder or an ``.npz``; for ``prepared`` the folder ``nas data prepare`` wrote.
            Default ``./data`` where one is needed.
        split: ``"search"`` (validation carved from the training data) or ``"final"``
            (all training data; validation = the official test split where the data set
            has one, else as ``"search"``).
        val_fraction: Share of the training data held out by the ``search`` split
            (``prepared``: ignored, its minival was fixed by ``prepare``).
        seed: Seed of the held-out permutation and of ``synthetic`` data (``prepared``:
            ignored, as above).
        download: Fetch CIFAR / MNIST files into ``data_dir`` when they are missing.
        resolution: Decode size for ``imagefolder`` (default 64) and image size for
            ``synthetic`` (default 32); other data sets keep their stored size (the
            trainer resizes on the device).
        num_classes: Classes of ``synthetic`` data.
        size: Samples of ``synthetic`` data (before the split).

    Returns:
        The data set: CPU tensors, or read-only memory maps for ``prepared``.

    Raises:
        DataError: Unknown name, bad argument, missing or unreadable files.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if split not in ("search", "final"):
        raise DataError(f"{name}: unknown split {split!r} (choose from search, final)")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
    if resolution is not None and (isinstance(resolution, bool) or resolution < 1):
        raise DataError(f"{name}: resolution must be a positive int, got {resolution!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    if name == "prepared":
        if folder is None:
            raise DataError("prepared: pass --data-dir (a folder written by nas data prepare)")
        return open_prepared(folder, split=split)
    args = SourceArgs(name=name, data_dir=folder, seed=seed, download=download, resolution=resolution,
                      num_classes=num_classes, size=size)
    return _split(name, LOADERS[name](args), split=split, val_fraction=val_fraction, seed=seed)


def _split(name: str, raw: Raw, *, split: str, val_fraction: float, seed: int) -> Dataset:
    """An in-memory set: split, as tensors, with normalisation statistics."""
    val_is_test = split == "final" and raw.x_test is not None and raw.y_test is not None
    if val_is_test:
        train_x, train_y, val_x, val_y = raw.x, raw.y, raw.x_test, raw.y_test
    else:
        n = len(raw.x)
        if n < 2:
            raise DataError(f"{name}: {n} training sample(s); need at least 2 to hold out a validation set")
        n_val = min(n - 1, max(1, int(round(n * val_fraction))))
        order = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        train_x, train_y = raw.x[train_idx], raw.y[train_idx]
        val_x, val_y = raw.x[val_idx], raw.y[val_idx]

    import torch  # here, not at the top: nas.data alone (a prepare's workers) needs no torch

    def tensor(a: np.ndarray, dtype: type) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    tx = tensor(train_x, np.uint8)
    mean, std = ChannelSums.of(tx.numpy()).stats()
    return Dataset(
        name=name,
        train=Split.of(tx, tensor(train_y, np.int64)),
        val=Split.of(tensor(val_x, np.uint8), tensor(val_y, np.int64)),
        num_classes=raw.num_classes,
        hflip=raw.hflip,
        mean=mean,
        std=std,
        classes=raw.classes,
        val_is_test=val_is_test,
    )
