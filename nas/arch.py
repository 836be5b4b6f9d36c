"""Architecture specs and their canonical string (DESIGN.md, "The architecture string").

An :class:`Arch` is a frozen, hashable value: stem, stages, head. ``str(arch)`` is the
one canonical string; :func:`parse_arch` reads it back (``parse_arch(str(a)) == a``) and
also accepts timm's EfficientNet block strings (``ds``, ``ir``, ``er``, ``cn``) so users
can paste timm definitions. This module does not import torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

__all__ = ["Arch", "Head", "Stage", "Stem", "BLOCK_NAMES", "parse_arch", "format_number"]

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
            raise ValueError(f"unknown block type {self.block!r} in {token!r} (choose from {', '.join(BLOCK_NAMES)})")
        if self.repeats < 1:
            raise ValueError(f"{token!r}: repeats must be >= 1, got {self.repeats}")
        _check_conv(token, self.kernel, self.stride, self.channels)
        if not self.expansion > 0:
            raise ValueError(f"{token!r}: expansion must be > 0, got {format_number(self.expansion)}")
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
    if stride not in (1, 2):
        raise ValueError(f"{token!r}: stride must be 1 or 2, got {stride}")
    if channels < 1:
        raise ValueError(f"{token!r}: channels must be >= 1, got {channels}")


def parse_arch(text: str) -> Arch:
    """Parse a canonical arch string, or timm block strings, into an :class:`Arch`.

    Stem and head tokens may be omitted (defaults ``stem_k3_s2_c32`` and ``head_c1280``).

    Raises:
        ValueError: naming the token that cannot be read.

    >>> str(parse_arch("ir_r1_k3_s1_e6_c16_se0.25"))
    'stem_k3_s2_c32 mb_r1_k3_s1_e6_c16_se0.25 head_c1280'
    """
    if not isinstance(text, str):
        raise TypeError(f"an arch string must be a str, got {type(text).__name__}")
    tokens = text.split()
    if not tokens:
        raise ValueError("empty architecture string")
    stem, head, stages = Stem(), Head(), []
    for i, token in enumerate(tokens):
        kind = token.split("_", 1)[0]
        if kind == "stem":
            if i != 0:
                raise ValueError(f"{token!r}: the stem must be the first token")
            stem = Stem(**_parse_options(token, required=("k", "s", "c"), names={"k": "kernel", "s": "stride", "c": "channels"}))
        elif kind == "head":
            if i != len(tokens) - 1:
                raise ValueError(f"{token!r}: the head must be the last token")
            head = Head(**_parse_options(token, required=("c",), names={"c": "channels"}))
        else:
            stages.append(_parse_stage(token))
    if not stages:
        raise ValueError(f"no stage in architecture string {text!r}")
    return Arch(stem=stem, stages=tuple(stages), head=head)


def _parse_stage(token: str) -> Stage:
    kind = token.split("_", 1)[0]
    if kind in BLOCK_NAMES:
        block, skip = kind, True
    elif kind in _TIMM_BLOCKS:
        block, skip = _TIMM_BLOCKS[kind]
    else:
        choices = ", ".join([*BLOCK_NAMES, *_TIMM_BLOCKS])
        raise ValueError(f"unknown block type {kind!r} in token {token!r} (choose from {choices})")
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
            raise ValueError(f"cannot read {part!r} in token {token!r}")
        key, raw = match.groups()
        if key in values:
            raise ValueError(f"{key!r} given twice in token {token!r}")
        number = float(raw)
        values[key] = number if key in ("e", "se") else _as_int(number, part, token)
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"token {token!r} lacks {', '.join('_' + k for k in missing)}")
    return {names[k]: v for k, v in values.items()}


def _as_int(number: float, part: str, token: str) -> int:
    if not number.is_integer():
        raise ValueError(f"{part!r} in token {token!r} must be a whole number")
    return int(number)
