"""Architecture specs and their canonical string (docs/design.md).

An :class:`Arch` is a frozen, hashable value: stem, stages, head. ``str(arch)`` is the
one canonical string; :func:`parse_arch` reads it back (``parse_arch(str(a)) == a``) and
also accepts timm's EfficientNet block strings (``ds``, ``ir``, ``er``, ``cn``) so users
can paste timm definitions. This module does not import torch.

Every spec is bounded (``MAX_*`` below) when it is made, so an absurd string such as
``mb_r100000_k3_s1_e1_c16`` is refused at once instead of building a network for minutes;
errors name the token and echo at most ~100 characters of it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from nas._echo import echo

__all__ = ["Arch", "Head", "Stage", "Stem", "BLOCK_NAMES", "parse_arch", "read_arch_file", "format_number",
           "MAX_ARCH_CHARS", "MAX_ARCH_FILE_BYTES", "MAX_BLOCKS", "MAX_CHANNELS", "MAX_EXPANSION",
           "MAX_KERNEL", "MAX_REPEATS"]

# Bounds far above any network of the field (EfficientNetV2-XL: 100 blocks, 640 channels in
# stages, kernel 5 at most in the EfficientNet spaces), yet low enough that building the
# largest allowed network on the meta device to count its cost takes seconds, not minutes.
#: Blocks in one stage.
MAX_REPEATS = 1000
#: Blocks in a whole network.
MAX_BLOCKS = 2000
#: Output channels of the stem, a stage or the head.
MAX_CHANNELS = 16384
#: Kernel size of any convolution.
MAX_KERNEL = 31
#: Expansion ratio of a block.
MAX_EXPANSION = 32
#: Characters of an arch string (the largest baseline takes ~300).
MAX_ARCH_CHARS = 64 * 1024
#: Bytes read from an arch file; a larger file is refused unread.
MAX_ARCH_FILE_BYTES = 1024 * 1024
# A number of more characters than this is refused before conversion: no bound above
# needs it, and int() of a 5,000-digit string raises with Python's own message.
_MAX_NUMBER_CHARS = 12

# canonical token -> human name (the YAML space files use the human names)
BLOCK_NAMES = {"mb": "mbconv", "fmb": "fused_mbconv"}

# timm block type -> (our block, skip default). timm's `cn` (ConvBnAct) has a residual only
# when `_skip` is given; ds/ir/er have one unless `_noskip` is given.
_TIMM_BLOCKS = {"ds": ("mb", True), "ir": ("mb", True), "er": ("fmb", True), "cn": ("fmb", False)}
_OPTION = re.compile(r"^(r|k|s|e|c|se)(\d+(?:\.\d+)?)$")


def format_number(x: float) -> str:
    """Shortest exact text for a number: ``6.0 -> '6'``, ``0.25 -> '0.25'``."""
    return f"{x:g}"


@dataclass(frozen=True)
class Stem:
    """The stem convolution: ``stem_k3_s2_c32``."""

    kernel: int = 3
    stride: int = 2
    channels: int = 32

    def __post_init__(self) -> None:
        _check_conv(f"stem_k{self.kernel}_s{self.stride}_c{self.channels}", self.kernel, self.stride, self.channels)

    def __str__(self) -> str:
        return f"stem_k{self.kernel}_s{self.stride}_c{self.channels}"


@dataclass(frozen=True)
class Head:
    """The 1x1 head convolution before pooling and the classifier: ``head_c1280``."""

    channels: int = 1280

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"head channels must be >= 1, got {self.channels}")
        if self.channels > MAX_CHANNELS:
            raise ValueError(f"head channels must be <= {MAX_CHANNELS}, got {self.channels}")

    def __str__(self) -> str:
        return f"head_c{self.channels}"


@dataclass(frozen=True)
class Stage:
    """One stage: ``repeats`` blocks of one type; the first block carries the stride.

    Attributes:
        block: ``"mb"`` (MBConv) or ``"fmb"`` (Fused-MBConv).
        repeats: number of blocks (>= 1).
        kernel: depthwise (MBConv) or expansion (Fused-MBConv) kernel size, odd.
        stride: 1 or 2, applied by the first block.
        expansion: expansion ratio; 1 means no expansion layer.
        channels: output channels of every block in the stage.
        se: squeeze-and-excitation ratio of the block's input channels; 0 = no SE.
        skip: residual connections where shapes allow (``_noskip`` turns them off).
    """

    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: float
    channels: int
    se: float = 0.0
    skip: bool = True

    def __post_init__(self) -> None:
        token = str(self)
        if self.block not in BLOCK_NAMES:
            raise ValueError(f"unknown block type {echo(self.block)} in {echo(token)} "
                             f"(choose from {', '.join(BLOCK_NAMES)})")
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise ValueError(f"{token!r}: repeats must be in [1, {MAX_REPEATS}], got {self.repeats}")
        _check_conv(token, self.kernel, self.stride, self.channels)
        if not 0 < self.expansion <= MAX_EXPANSION:
            raise ValueError(f"{token!r}: expansion must be in (0, {MAX_EXPANSION}], "
                             f"got {format_number(self.expansion)}")
        if not 0 <= self.se < 1:
            raise ValueError(f"{token!r}: se ratio must be in [0, 1), got {format_number(self.se)}")
        # Normalise integral ratios so that equal networks compare (and hash) equal.
        if float(self.expansion).is_integer():
            object.__setattr__(self, "expansion", int(self.expansion))

    def __str__(self) -> str:
        text = (f"{self.block}_r{self.repeats}_k{self.kernel}_s{self.stride}"
                f"_e{format_number(self.expansion)}_c{self.channels}")
        if self.se:
            text += f"_se{format_number(self.se)}"
        if not self.skip:
            text += "_noskip"
        return text


@dataclass(frozen=True)
class Arch:
    """A whole network: stem, stages in order, head. ``str(arch)`` is canonical."""

    stages: tuple[Stage, ...]
    stem: Stem = field(default_factory=Stem)
    head: Head = field(default_factory=Head)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("an architecture needs at least one stage")
        object.__setattr__(self, "stages", tuple(self.stages))
        if self.depth > MAX_BLOCKS:
            raise ValueError(f"{self.depth:,} blocks in all; an architecture has at most {MAX_BLOCKS:,}")

    def __str__(self) -> str:
        return " ".join([str(self.stem), *map(str, self.stages), str(self.head)])

    @property
    def depth(self) -> int:
        """Number of blocks over all stages."""
        return sum(s.repeats for s in self.stages)

    def replace_stage(self, index: int, **changes: object) -> Arch:
        """A copy with stage ``index`` (0-based) changed; specs are never mutated."""
        stages = list(self.stages)
        stages[index] = replace(stages[index], **changes)
        return replace(self, stages=tuple(stages))


def _check_conv(token: str, kernel: int, stride: int, channels: int) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"{token!r}: kernel must be odd and >= 1, got {kernel}")
    if kernel > MAX_KERNEL:
        raise ValueError(f"{token!r}: kernel must be <= {MAX_KERNEL}, got {kernel}")
    if stride not in (1, 2):
        raise ValueError(f"{token!r}: stride must be 1 or 2, got {stride}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"{token!r}: channels must be in [1, {MAX_CHANNELS}], got {channels}")


def parse_arch(text: str) -> Arch:
    """Parse a canonical arch string, or timm block strings, into an :class:`Arch`.

    Stem and head tokens may be omitted (defaults ``stem_k3_s2_c32`` and ``head_c1280``).

    Raises:
        ValueError: naming the token that cannot be read or is out of bounds (``MAX_*``),
            or for a text longer than ``MAX_ARCH_CHARS``.

    >>> str(parse_arch("ir_r1_k3_s1_e6_c16_se0.25"))
    'stem_k3_s2_c32 mb_r1_k3_s1_e6_c16_se0.25 head_c1280'
    """
    if not isinstance(text, str):
        raise TypeError(f"an arch string must be a str, got {type(text).__name__}")
    if len(text) > MAX_ARCH_CHARS:
        raise ValueError(f"architecture string of {len(text):,} characters is too long "
                         f"(at most {MAX_ARCH_CHARS:,}): {echo(text)}")
    tokens = text.split()
    if not tokens:
        raise ValueError("empty architecture string")
    stem, head, stages = Stem(), Head(), []
    for i, token in enumerate(tokens):
        kind = token.split("_", 1)[0]
        if kind == "stem":
            if i != 0:
                raise ValueError(f"{echo(token)}: the stem must be the first token")
            stem = Stem(**_parse_options(token, required=("k", "s", "c"), names={"k": "kernel", "s": "stride", "c": "channels"}))
        elif kind == "head":
            if i != len(tokens) - 1:
                raise ValueError(f"{echo(token)}: the head must be the last token")
            head = Head(**_parse_options(token, required=("c",), names={"c": "channels"}))
        else:
            stages.append(_parse_stage(token))
    if not stages:
        raise ValueError(f"no stage in architecture string {echo(text)}")
    return Arch(stem=stem, stages=tuple(stages), head=head)


def _parse_stage(token: str) -> Stage:
    kind = token.split("_", 1)[0]
    if kind in BLOCK_NAMES:
        block, skip = kind, True
    elif kind in _TIMM_BLOCKS:
        block, skip = _TIMM_BLOCKS[kind]
    else:
        choices = ", ".join([*BLOCK_NAMES, *_TIMM_BLOCKS])
        where = "" if kind == token else f" in token {echo(token)}"
        raise ValueError(f"unknown block type {echo(kind)}{where} (choose from {choices})")
    flags = [part for part in token.split("_")[1:] if part in ("skip", "noskip")]
    if "noskip" in flags:
        skip = False
    elif "skip" in flags:
        skip = True
    rest = "_".join([kind] + [p for p in token.split("_")[1:] if p not in ("skip", "noskip")])
    opts = _parse_options(rest, required=("r", "k", "s", "c"), optional=("e", "se"), token=token,
                          names={"r": "repeats", "k": "kernel", "s": "stride", "c": "channels", "e": "expansion", "se": "se"})
    opts.setdefault("expansion", 1)
    return Stage(block=block, skip=skip, **opts)


def _parse_options(text: str, *, required: tuple[str, ...], optional: tuple[str, ...] = (),
                   names: dict[str, str], token: str | None = None) -> dict[str, float]:
    token = token or text
    values: dict[str, float] = {}
    for part in text.split("_")[1:]:
        match = _OPTION.match(part)
        if not match or match.group(1) not in (*required, *optional):
            raise ValueError(f"cannot read {echo(part)} in token {echo(token)}")
        key, raw = match.groups()
        if key in values:
            raise ValueError(f"{key!r} given twice in token {echo(token)}")
        if len(raw) > _MAX_NUMBER_CHARS:
            raise ValueError(f"_{key} has a number of {len(raw):,} characters in token {echo(token)}")
        number = float(raw)
        values[key] = number if key in ("e", "se") else _as_int(number, part, token)
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"token {echo(token)} lacks {', '.join('_' + k for k in missing)}")
    return {names[k]: v for k, v in values.items()}


def _as_int(number: float, part: str, token: str) -> int:
    if not number.is_integer():
        raise ValueError(f"{echo(part)} in token {echo(token)} must be a whole number")
    return int(number)


def read_arch_file(path: str | os.PathLike[str]) -> Arch:
    """Read the arch string a file holds (at most ``MAX_ARCH_FILE_BYTES`` are read).

    Raises:
        ValueError: one line naming the file: a directory, a larger file, not UTF-8
            text, or the arch string's own error.
        OSError: when the file cannot be opened (missing, no permission).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an arch file")
    with path.open("rb") as fh:
        data = fh.read(MAX_ARCH_FILE_BYTES + 1)
    if len(data) > MAX_ARCH_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_ARCH_FILE_BYTES // 1024 ** 2} MB; an arch file holds "
                         f"one arch string")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    try:
        return parse_arch(text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
