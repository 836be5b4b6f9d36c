"""What every data set becomes: a :class:`Dataset` of two :class:`Split` s of uint8 images.

A split holds its images either as tensors in memory (small sets) or as read-only
memory-mapped arrays (prepared sets), behind one small interface: its length, the image
shape, and a gather of rows. The trainer needs nothing else, so it never learns which
kind it was given, and nothing here copies a mapped array.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # torch only in annotations: the decoding workers of a prepare never import it
    import torch

    Array = Union[torch.Tensor, np.ndarray]

__all__ = ["ChannelSums", "DataError", "Dataset", "Split"]


class DataError(ValueError):
    """A user-caused data problem; ``str()`` is one line naming the data set, path and fault."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split: uint8 images ``(N, 3, H, W)`` and int64 labels ``(N,)``, in parts read end to end.

    A part is a pair of CPU tensors (small sets, in memory) or of read-only memory-mapped
    arrays (prepared sets: every process on a host reads the same page-cache copy). Split
    ``final`` of a prepared set is train + minival as two parts, so it needs no
    concatenated copy.

    Attributes:
        parts: ``(images, labels)`` pairs; all images share one shape ``(3, H, W)``.
    """

    parts: tuple[tuple[Array, Array], ...]
    # numpy views of the parts (never copies), made once for gather()
    _arrays: tuple[tuple[np.ndarray, np.ndarray], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        assert self.parts, "a split has at least one part"
        assert len({tuple(x.shape[1:]) for x, _ in self.parts}) == 1, "parts differ in image shape"
        assert all(len(x) == len(y) for x, y in self.parts), "a part has as many labels as images"
        object.__setattr__(self, "_arrays", tuple((_as_array(x), _as_array(y)) for x, y in self.parts))

    @classmethod
    def of(cls, x: Array, y: Array) -> Split:
        """A split of one part."""
        return cls(((x, y),))

    def __len__(self) -> int:
        return sum(len(x) for x, _ in self.parts)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)`` of every image."""
        c, h, w = self.parts[0][0].shape[1:]
        return int(c), int(h), int(w)

    @property
    def mapped(self) -> bool:
        """Whether the images are memory-mapped arrays rather than tensors in memory."""
        return any(isinstance(x, np.ndarray) for x, _ in self.parts)

    @property
    def x(self) -> Array:
        """The images of a one-part split."""
        return self._only()[0]

    @property
    def y(self) -> Array:
        """The labels of a one-part split."""
        return self._only()[1]

    def gather(self, idx: torch.Tensor, x_out: torch.Tensor, y_out: torch.Tensor) -> None:
        """Copy rows ``idx`` (CPU int64, numbered across all parts) into ``x_out`` and ``y_out`` (CPU).

        One ``np.take`` per part: from a map only the rows asked for are read. numpy
        copies on the calling thread alone, with the GIL released, so a background thread
        can gather beside training (a torch op there would start a second OpenMP team
        that competes with the training's threads).
        """
        index, x_dst, y_dst = idx.numpy(), x_out.numpy(), y_out.numpy()
        assert len(index) == 0 or 0 <= index.min() and index.max() < len(self), "rows of this split"
        if len(self._arrays) == 1:
            (x, y), = self._arrays
            # mode "clip" (the indices are checked above): with "raise", numpy copies
            # through a temporary buffer, three times slower
            np.take(x, index, axis=0, out=x_dst, mode="clip")
            np.take(y, index, axis=0, out=y_dst, mode="clip")
            return
        start = 0
        for x, y in self._arrays:
            inside = np.flatnonzero((index >= start) & (index < start + len(x)))
            x_dst[inside] = np.take(x, index[inside] - start, axis=0)
            y_dst[inside] = np.take(y, index[inside] - start, axis=0)
            start += len(x)

    def _only(self) -> tuple[Array, Array]:
        if len(self.parts) != 1:
            raise ValueError(f"this split has {len(self.parts)} parts (train + minival); read it with gather()")
        return self.parts[0]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train and validation parts.

    Attributes:
        name: The data set's name (one of ``nas.data.DATASETS``).
        train: The training images and labels.
        val: The validation images and labels (minival, or the test split for ``final``).
        num_classes: Number of classes; labels lie in ``[0, num_classes)``.
        hflip: Whether a horizontal flip is a label-preserving augmentation.
        mean: Per-channel mean of the training images, in [0, 1] units.
        std: Per-channel standard deviation of the training images, in [0, 1] units.
        classes: Class names by label, where the data set has them.
        val_is_test: Whether ``val`` is the source's own test split (split ``final`` of a
            set that has one), rather than images held out of the training data.
    """

    name: str
    train: Split
    val: Split
    num_classes: int
    hflip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...] = ()
    val_is_test: bool = False

    # One-part splits (every in-memory set) read as arrays, as they always have.
    @property
    def train_x(self) -> Array:
        """The training images (a one-part split)."""
        return self.train.x

    @property
    def train_y(self) -> Array:
        """The training labels (a one-part split)."""
        return self.train.y

    @property
    def val_x(self) -> Array:
        """The validation images."""
        return self.val.x

    @property
    def val_y(self) -> Array:
        """The validation labels."""
        return self.val.y


@dataclass(frozen=True)
class ChannelSums:
    """Per-channel sums of uint8 images, added up chunk by chunk (and across a resumed prepare).

    Attributes:
        pixels: Pixels per channel counted so far.
        total: Per-channel sum of the values (0..255).
        total_sq: Per-channel sum of the squared values.
    """

    pixels: int = 0
    total: tuple[float, float, float] = (0.0, 0.0, 0.0)
    total_sq: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def of(cls, x: np.ndarray, *, chunk: int = 1024) -> ChannelSums:
        """The sums of uint8 images ``(N, 3, H, W)``: exact integer sums, in chunks (no float copy)."""
        total = np.zeros(3, dtype=np.int64)
        total_sq = np.zeros(3, dtype=np.int64)
        for start in range(0, len(x), chunk):
            c = np.asarray(x[start:start + chunk])
            total += c.sum(axis=(0, 2, 3), dtype=np.int64)
            total_sq += np.square(c, dtype=np.uint16).sum(axis=(0, 2, 3), dtype=np.int64)  # 255² fits
        return cls(len(x) * x.shape[2] * x.shape[3], _triple(total), _triple(total_sq))

    def __add__(self, other: ChannelSums) -> ChannelSums:
        return ChannelSums(
            self.pixels + other.pixels,
            _triple(np.add(self.total, other.total)),
            _triple(np.add(self.total_sq, other.total_sq)),
        )

    def stats(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Per-channel mean and standard deviation in [0, 1] units."""
        count = max(1, self.pixels)
        mean = np.asarray(self.total) / count
        var = np.clip(np.asarray(self.total_sq) / count - mean * mean, 0.0, None)
        # a constant channel would divide by zero when normalising
        std = np.maximum(np.sqrt(var), 1.0)
        return _triple(mean / 255.0), _triple(std / 255.0)


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _as_array(a: Array) -> np.ndarray:
    """A numpy view of ``a``: a map as it is, a CPU tensor's own memory."""
    return a if isinstance(a, np.ndarray) else a.numpy()
