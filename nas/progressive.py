"""Progressive learning (EfficientNetV2 §4, Algorithm 1): image size and regularisation rise together.

Training is cut into M stages of (nearly) equal length, split as the official code splits
them: stage ``i`` (from 0) runs to epoch ``⌊(i + 1) · N / M⌋`` of N, so an uneven remainder
goes to the later, larger stages, and the final size gets at least its share. Stage ``i`` trains at
``S_i = S_0 + (S_e − S_0) · i / (M − 1)`` pixels with regularisation ``Φ_i`` interpolated
the same way between its start and end values: small images with weak regularisation
first (fast steps, easy to fit), the final size with the strongest last. Three kinds of
regularisation rise here: the classifier's dropout rate, the RandAugment magnitude and
the mixup α (:mod:`nas.augment` applies the last two to whole batches on the device).

Defaults are EfficientNetV2-S's settings from the paper's Table 6: dropout 0.1 → 0.3,
RandAugment 5 → 15, mixup α 0 → 0 (V2-S uses no mixup; V2-M raises it 0 → 0.2 and V2-L
0 → 0.4), in 4 stages (the official code's ``train.stages``). The start size defaults to
half the final one, on a multiple of 8 (the official code's default base size is half the
training size; the paper's V2-S starts at 128 px for 300). Evaluation is always at the
final size, as EfficientNetV2 evaluates: :func:`nas.train.train` does that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Progressive", "Stage", "default_start_resolution"]

# the proxy trainer's smallest image (see nas.train)
_MIN_RESOLUTION = 8
# RandAugment's level scale reaches its reference range at 10; the paper's largest
# schedule (V2-L) ends at 25, so 30 leaves room and still catches a slipped digit
_MAX_RANDAUG = 30.0


@dataclass(frozen=True)
class Stage:
    """What one epoch of progressive training uses.

    Attributes:
        index: The stage, from 0.
        stages: How many stages the training has (at most one per epoch).
        resolution: Side of the training images, in pixels.
        dropout: The classifier's dropout rate.
        randaug: The RandAugment magnitude (0 = no RandAugment).
        mixup: The mixup α (0 = no mixup).
    """

    index: int
    stages: int
    resolution: int
    dropout: float
    randaug: float
    mixup: float


@dataclass(frozen=True)
class Progressive:
    """A progressive-learning schedule; each range is ``(start, end)`` and rises linearly over the stages.

    Attributes:
        stages: M, the number of stages (fewer when there are fewer epochs than stages,
            so that every stage trains at least one epoch and the last is always reached).
        start_resolution: S_0 in pixels; ``None``: :func:`default_start_resolution` of the
            final size.
        dropout: Classifier dropout rate, each in [0, 1).
        randaug: RandAugment magnitude on the 0..10 level scale, each in [0, 30].
        mixup: Mixup α (of the Beta(α, α) draw per batch), each >= 0.
    """

    stages: int = 4
    start_resolution: int | None = None
    dropout: tuple[float, float] = (0.1, 0.3)
    randaug: tuple[float, float] = (5.0, 15.0)
    mixup: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 1:
            raise ValueError(f"Progressive.stages must be a positive int, got {self.stages!r}")
        start = self.start_resolution
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < _MIN_RESOLUTION):
            raise ValueError(f"Progressive.start_resolution must be an int >= {_MIN_RESOLUTION}, got {start!r}")
        for name, high, high_closed in (("dropout", 1.0, False), ("randaug", _MAX_RANDAUG, True),
                                        ("mixup", math.inf, False)):
            object.__setattr__(self, name, _check_range(name, getattr(self, name), high, high_closed))

    def plan(self, epochs: int, resolution: int) -> tuple[Stage, ...]:
        """The stage of each epoch, for ``epochs`` epochs that end at ``resolution`` pixels.

        Epoch ``e`` (from 0) belongs to stage ``⌈(e + 1) · M / epochs⌉ − 1`` with ``M =
        min(stages, epochs)`` (stage ``i`` ends after epoch ``⌊(i + 1) · epochs / M⌋``);
        sizes round to the nearest pixel. A single stage trains at the end values (the
        final size and the strongest regularisation).

        Raises:
            ValueError: ``epochs`` < 1, or the start size above the final one.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        start = self.start_resolution if self.start_resolution is not None else default_start_resolution(resolution)
        if start > resolution:
            raise ValueError(f"Progressive.start_resolution {start} exceeds the final resolution {resolution}")
        count = min(self.stages, epochs)
        stages = []
        for index in range(count):
            t = index / (count - 1) if count > 1 else 1.0
            stages.append(Stage(
                index=index,
                stages=count,
                # half up, not Python's half to even: a size should not depend on parity
                resolution=int(math.floor(start + (resolution - start) * t + 0.5)),
                dropout=_lerp(self.dropout, t),
                randaug=_lerp(self.randaug, t),
                mixup=_lerp(self.mixup, t),
            ))
        return tuple(stages[((e + 1) * count - 1) // epochs] for e in range(epochs))


def default_start_resolution(resolution: int) -> int:
    """Half of ``resolution`` on the nearest multiple of 8, at least 8 and at most ``resolution``.

    32 → 16, 224 → 112, 300 → 152 (the paper trains V2-S from 128 for 300; the official
    code's default base is half the training size).
    """
    return min(resolution, max(_MIN_RESOLUTION, 8 * int(math.floor(resolution / 16 + 0.5))))


def _lerp(bounds: tuple[float, float], t: float) -> float:
    start, end = bounds
    return start + (end - start) * t


def _check_range(name: str, value: object, high: float, high_closed: bool) -> tuple[float, float]:
    """``value`` as a ``(start, end)`` pair of floats with ``0 <= start <= end`` below ``high``."""
    pair: tuple[float, ...] = ()
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        pair = tuple(float(v) for v in value)
    bound = f"<= {high:g}" if high_closed else (f"< {high:g}" if math.isfinite(high) else "finite")
    if len(pair) != 2 or not all(math.isfinite(v) and 0.0 <= v and (v <= high if high_closed else v < high)
                                 for v in pair):
        raise ValueError(f"Progressive.{name} must be a (start, end) pair of numbers >= 0 and {bound}, got {value!r}")
    if pair[0] > pair[1]:
        raise ValueError(f"Progressive.{name} must not fall: start {pair[0]:g} exceeds end {pair[1]:g} "
                         "(regularisation rises with the image size)")
    return pair[0], pair[1]
