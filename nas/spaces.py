"""Search spaces: per-stage choices read from YAML (or a dict), pycls style.

A space is a list of named categorical *decisions* (``stage3.kernel``); an architecture
is one choice per decision. Everything a controller needs is here: sampling, membership
(with the first reason an arch does not fit), arch <-> decisions, exact size and a
one-decision mutation.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas._echo import clip, echo
from nas.arch import (MAX_CHANNELS, MAX_EXPANSION, MAX_KERNEL, MAX_REPEATS, Arch, Head, Stage, Stem, format_number,
                      parse_arch)
from nas.yamlio import YamlError, parse_yaml, read_yaml

__all__ = ["Decision", "StageSpace", "SearchSpace", "load_space", "shipped_spaces", "SpaceError"]

_BLOCK_ALIASES = {"mbconv": "mb", "mb": "mb", "fused_mbconv": "fmb", "fmb": "fmb"}
_BLOCK_FIELD_NAMES = {"mb": "mbconv", "fmb": "fused_mbconv"}
_STAGE_KEYS = ("channels", "stride", "block", "kernel", "expansion", "layers", "se")
_DEFAULT_KEYS = ("block", "kernel", "expansion", "layers", "se", "channels")
_TOP_KEYS = ("name", "description", "baseline", "stem", "head", "defaults", "stages")
_STEM_KEYS = ("channels", "kernel", "stride")


class SpaceError(ValueError):
    """A search-space definition is wrong; the message is one line naming file, stage and field."""


@dataclass(frozen=True)
class Decision:
    """One categorical choice a controller makes, e.g. ``stage3.kernel`` in ``(3, 5)``."""

    name: str
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage. ``se_by_block`` ties the SE ratio to the block type."""

    index: int
    channels: tuple[int, ...]
    stride: int
    block: tuple[str, ...]
    kernel: tuple[int, ...]
    expansion: tuple[float, ...]
    layers: tuple[int, ...]
    se: tuple[float, ...] = (0.0,)
    se_by_block: tuple[tuple[str, float], ...] | None = None

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Field -> choices, in decision order (the SE choice only when not tied to the block)."""
        out: dict[str, tuple[Any, ...]] = {
            "block": tuple(_BLOCK_FIELD_NAMES[b] for b in self.block), "kernel": self.kernel,
            "expansion": self.expansion, "layers": self.layers, "channels": self.channels,
        }
        if self.se_by_block is None:
            out["se"] = self.se
        return out

    def stage(self, values: Mapping[str, Any]) -> Stage:
        block = _BLOCK_ALIASES[values["block"]]
        se = dict(self.se_by_block)[block] if self.se_by_block is not None else values["se"]
        return Stage(block=block, repeats=values["layers"], kernel=values["kernel"], stride=self.stride,
                     expansion=values["expansion"], channels=values["channels"], se=se)

    def values(self, stage: Stage) -> dict[str, Any]:
        return {"block": _BLOCK_FIELD_NAMES[stage.block], "kernel": stage.kernel, "expansion": stage.expansion,
                "layers": stage.repeats, "channels": stage.channels, "se": stage.se}

    def mismatch(self, stage: Stage) -> str | None:
        """Why ``stage`` is not in this stage's choices (None when it is)."""
        where = f"stage {self.index}"
        if stage.stride != self.stride:
            return f"{where}: stride {stage.stride} is not {self.stride}"
        if not stage.skip:
            return f"{where}: residuals turned off (_noskip) are not in this space"
        values = self.values(stage)
        for name, choices in self.choices().items():
            if values[name] not in choices:
                return f"{where}: {name} {_show(values[name])} not in {_show_list(choices)}"
        if self.se_by_block is not None and stage.se != dict(self.se_by_block)[stage.block]:
            want = dict(self.se_by_block)[stage.block]
            return f"{where}: se {_show(stage.se)} is not {_show(want)} for {_BLOCK_FIELD_NAMES[stage.block]}"
        return None


@dataclass(frozen=True)
class SearchSpace:
    """A stage-wise factorized space of architectures.

    Build one with :func:`load_space` (a shipped name or a YAML path) or
    :meth:`from_dict`.
    """

    name: str
    stages: tuple[StageSpace, ...]
    stem: tuple[int, ...] = (32,)
    stem_kernel: int = 3
    stem_stride: int = 2
    head: tuple[int, ...] = (1280,)
    description: str = ""
    baseline: str | None = None
    source: str = field(default="<dict>", compare=False)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SearchSpace:
        """Validate a parsed YAML mapping; :class:`SpaceError` names source, stage and field."""
        return _SpaceReader(source).read(data)

    # -- decisions ------------------------------------------------------------------------
    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every choice with more than one option, in a fixed order."""
        return tuple(Decision(name, choices) for name, choices in self._all_choices().items() if len(choices) > 1)

    @property
    def size(self) -> int:
        """Exact number of distinct architectures (each decision changes the arch string)."""
        return math.prod(len(d.choices) for d in self.decisions)

    def _all_choices(self) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {"stem.channels": self.stem}
        for st in self.stages:
            out.update({f"stage{st.index}.{k}": v for k, v in st.choices().items()})
        out["head.channels"] = self.head
        return out

    def from_decisions(self, values: Mapping[str, Any]) -> Arch:
        """The architecture for one value per decision (fixed fields filled in)."""
        full = {}
        for name, choices in self._all_choices().items():
            value = values.get(name, choices[0]) if len(choices) > 1 else choices[0]
            if value not in choices:
                raise ValueError(f"{name}: {_show(value)} not in {_show_list(choices)}")
            full[name] = value
        stages = tuple(st.stage({k.split(".", 1)[1]: v for k, v in full.items() if k.startswith(f"stage{st.index}.")})
                       for st in self.stages)
        return Arch(stem=Stem(self.stem_kernel, self.stem_stride, full["stem.channels"]), stages=stages,
                    head=Head(full["head.channels"]))

    def to_decisions(self, arch: Arch | str) -> dict[str, Any]:
        """The decision values that give ``arch``; ``ValueError`` saying why when it is not a member."""
        arch = _as_arch(arch)
        reason = self.mismatch(arch)
        if reason:
            raise ValueError(reason)
        values: dict[str, Any] = {"stem.channels": arch.stem.channels, "head.channels": arch.head.channels}
        for st, stage in zip(self.stages, arch.stages):
            values.update({f"stage{st.index}.{k}": v for k, v in st.values(stage).items()})
        return {d.name: values[d.name] for d in self.decisions}

    # -- membership, sampling, mutation ----------------------------------------------------
    def mismatch(self, arch: Arch | str) -> str | None:
        """The first reason ``arch`` is not in the space (e.g. ``stage 3: kernel 7 not in [3, 5]``)."""
        arch = _as_arch(arch)
        # Stages first: they are what users compare; then the stage count, stem and head.
        for st, stage in zip(self.stages, arch.stages):
            reason = st.mismatch(stage)
            if reason:
                return reason
        if len(arch.stages) != len(self.stages):
            return f"stage {min(len(arch.stages), len(self.stages)) + 1}: the space has {len(self.stages)} stages, the arch has {len(arch.stages)}"
        if (arch.stem.kernel, arch.stem.stride) != (self.stem_kernel, self.stem_stride):
            return f"stem: kernel {arch.stem.kernel} stride {arch.stem.stride} is not kernel {self.stem_kernel} stride {self.stem_stride}"
        if arch.stem.channels not in self.stem:
            return f"stem: channels {arch.stem.channels} not in {_show_list(self.stem)}"
        if arch.head.channels not in self.head:
            return f"head: channels {arch.head.channels} not in {_show_list(self.head)}"
        return None

    def contains(self, arch: Arch | str) -> bool:
        """Whether ``arch`` is one of this space's architectures."""
        return self.mismatch(arch) is None

    def sample(self, rng_or_seed: random.Random | int | None = None) -> Arch:
        """One architecture, every decision drawn uniformly."""
        rng = _rng(rng_or_seed)
        return self.from_decisions({d.name: rng.choice(d.choices) for d in self.decisions})

    def mutate(self, arch: Arch | str, rng_or_seed: random.Random | int | None = None) -> Arch:
        """A copy of ``arch`` with exactly one decision changed (regularized evolution's mutation)."""
        rng = _rng(rng_or_seed)
        values = self.to_decisions(arch)
        if not self.decisions:
            raise ValueError(f"space {echo(self.name)} has a single architecture: nothing to mutate")
        decision = rng.choice(self.decisions)
        values[decision.name] = rng.choice([c for c in decision.choices if c != values[decision.name]])
        return self.from_decisions(values)

    def baseline_arch(self) -> Arch | None:
        """The space's reference architecture (a baseline name or an arch string), if any."""
        return None if self.baseline is None else _resolve_arch(self.baseline)


def shipped_spaces() -> tuple[str, ...]:
    """Names of the spaces that ship with the package (``search_spaces/*.yaml``)."""
    return tuple(sorted(p.name[:-5] for p in resources.files("search_spaces").iterdir() if p.name.endswith(".yaml")))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (``tiny``, ``efficientnet``, ``efficientnetv2``) or a YAML file.

    A file or folder of that name wins over a shipped space; the file is read with
    :func:`nas.yamlio.read_yaml` (safe, bounded, duplicate keys refused).

    Raises:
        SpaceError: one line naming the file, stage and field that is wrong.
    """
    text_name = str(name_or_path)
    path = Path(text_name)
    try:
        if _exists(path) and not (path.is_dir() and text_name in shipped_spaces()):
            source, data = str(path), read_yaml(path)
        elif text_name in shipped_spaces():
            source = text_name
            text = resources.files("search_spaces").joinpath(f"{text_name}.yaml").read_text(encoding="utf-8")
            data = parse_yaml(text, source=source)
        elif path.suffix in (".yaml", ".yml") or "/" in text_name:
            raise SpaceError(f"{clip(text_name)}: no such file")
        else:
            raise SpaceError(f"no search space {echo(text_name)}: not a file and not a shipped space "
                             f"(choose from {', '.join(shipped_spaces())})")
    except YamlError as err:
        raise SpaceError(str(err)) from None
    return SearchSpace.from_dict(data, source=source)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long for the file system: not a file, then
        return False


class _SpaceReader:
    """Validates one space definition; every error names the source, the stage and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> SpaceError:
        return SpaceError(f"{self.source}: {where + ': ' if where else ''}{message}")

    def read(self, data: Any) -> SearchSpace:
        if data is None:
            raise self.fail("", "empty file (a search space needs name and stages)")
        if not isinstance(data, dict):
            raise self.fail("", f"a search space must be a mapping with name and stages, got a {_kind(data)}")
        self.unknown_keys(data, _TOP_KEYS, "")
        for key in ("name", "stages"):
            if key not in data:
                raise self.fail("", f"missing {key!r}")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise self.fail("name", f"must be a non-empty string, got {echo(name)}")
        for key in ("description", "baseline"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise self.fail(key, f"must be a string, got a {_kind(data[key])}")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise self.fail("defaults", f"must be a mapping, got a {_kind(defaults)}")
        self.unknown_keys(defaults, _DEFAULT_KEYS, "defaults")
        stages = data["stages"]
        if not isinstance(stages, list) or not stages:
            raise self.fail("stages", "must be a non-empty list of stage mappings")
        stem, stem_kernel, stem_stride = self.stem(data.get("stem", 32))
        head = self.ints(data.get("head", 1280), "head", "channels", maximum=MAX_CHANNELS)
        space = SearchSpace(
            name=name, description=data.get("description") or "", stem=stem, stem_kernel=stem_kernel,
            stem_stride=stem_stride, head=head, source=self.source,
            stages=tuple(self.stage(i, s, defaults) for i, s in enumerate(stages, start=1)),
            baseline=data.get("baseline"),
        )
        self.check_baseline(space)
        return space

    def check_baseline(self, space: SearchSpace) -> None:
        if space.baseline is None:
            return
        try:
            arch = space.baseline_arch()
        except ValueError as err:
            raise self.fail("baseline", str(err)) from None
        reason = space.mismatch(arch)
        if reason:
            raise self.fail("baseline", f"{echo(space.baseline)} is not in the space: {reason}")

    def stem(self, value: Any) -> tuple[tuple[int, ...], int, int]:
        if isinstance(value, dict):
            self.unknown_keys(value, _STEM_KEYS, "stem")
            kernel = self.one_int(value.get("kernel", 3), "stem", "kernel", maximum=MAX_KERNEL)
            stride = self.one_int(value.get("stride", 2), "stem", "stride")
            if kernel % 2 == 0 or kernel < 1:
                raise self.fail("stem", f"kernel {kernel} must be odd")
            if stride not in (1, 2):
                raise self.fail("stem", f"stride {stride} not in [1, 2]")
            return self.ints(value.get("channels", 32), "stem", "channels", maximum=MAX_CHANNELS), kernel, stride
        return self.ints(value, "stem", "channels", maximum=MAX_CHANNELS), 3, 2

    def stage(self, index: int, raw: Any, defaults: Mapping[str, Any]) -> StageSpace:
        where = f"stage {index}"
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be a mapping of {', '.join(_STAGE_KEYS)}, got a {_kind(raw)}")
        self.unknown_keys(raw, _STAGE_KEYS, where)
        spec = {**defaults, **raw}
        for key in ("channels", "stride", "block", "kernel", "expansion", "layers"):
            if key not in spec:
                raise self.fail(where, f"missing {key!r}")
        blocks = tuple(self.block(b, where) for b in self.choice_list(spec["block"], where, "block"))
        kernels = self.ints(spec["kernel"], where, "kernel", maximum=MAX_KERNEL)
        for k in kernels:
            if k % 2 == 0:
                raise self.fail(where, f"kernel {k} must be odd (e.g. 3 or 5)")
        stride = self.one_int(spec["stride"], where, "stride")
        if stride not in (1, 2):
            raise self.fail(where, f"stride {stride} not in [1, 2]")
        se, se_by_block = self.se(spec.get("se", 0), where, blocks)
        return StageSpace(index=index, channels=self.ints(spec["channels"], where, "channels", maximum=MAX_CHANNELS),
                          stride=stride, block=blocks, kernel=kernels,
                          expansion=self.numbers(spec["expansion"], where, "expansion"),
                          layers=self.layers(spec["layers"], where), se=se, se_by_block=se_by_block)

    def block(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or value.lower() not in _BLOCK_ALIASES:
            raise self.fail(where, f"block {echo(value)} unknown (choose from mbconv, fused_mbconv)")
        return _BLOCK_ALIASES[value.lower()]

    def se(self, value: Any, where: str, blocks: tuple[str, ...]) -> tuple[tuple[float, ...], tuple[tuple[str, float], ...] | None]:
        if isinstance(value, dict):
            tied = {}
            for key, ratio in value.items():
                block = self.block(key, f"{where}: se")
                tied[block] = self.se_ratio(ratio, where)
            missing = [_BLOCK_FIELD_NAMES[b] for b in blocks if b not in tied]
            if missing:
                raise self.fail(where, f"se gives no ratio for {', '.join(missing)}")
            return (0.0,), tuple(sorted(tied.items()))
        return tuple(self.se_ratio(v, where) for v in self.choice_list(value, where, "se")), None

    def se_ratio(self, value: Any, where: str) -> float:
        if not _is_number(value) or not 0 <= value < 1:
            raise self.fail(where, f"se {echo(value)} must be a ratio in [0, 1)")
        return float(value)

    def layers(self, value: Any, where: str) -> tuple[int, ...]:
        if isinstance(value, dict):
            self.unknown_keys(value, ("min", "max"), f"{where}: layers")
            if "min" not in value or "max" not in value:
                raise self.fail(where, "layers range needs both min and max")
            lo, hi = (self.one_int(value[k], where, "layers", maximum=MAX_REPEATS) for k in ("min", "max"))
            if hi < lo:
                raise self.fail(where, f"layers range min {lo} > max {hi}")
            return tuple(range(lo, hi + 1))
        return self.ints(value, where, "layers", maximum=MAX_REPEATS)

    def numbers(self, value: Any, where: str, name: str) -> tuple[float, ...]:
        out = []
        for v in self.choice_list(value, where, name):
            if not _is_number(v) or v <= 0:
                raise self.fail(where, f"{name} {echo(v)} must be a number > 0")
            if v > MAX_EXPANSION:
                raise self.fail(where, f"{name} {format_number(v)} must be <= {MAX_EXPANSION}")
            out.append(int(v) if float(v).is_integer() else float(v))
        return _unique(out)

    def ints(self, value: Any, where: str, name: str, *, maximum: int) -> tuple[int, ...]:
        return _unique([self.one_int(v, where, name, maximum=maximum) for v in self.choice_list(value, where, name)])

    def one_int(self, value: Any, where: str, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
        """A whole number in [minimum, maximum]; the bounds are the arch string's (``nas.arch.MAX_*``)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"{name} {echo(value)} must be a whole number")
        if value < minimum:
            raise self.fail(where, f"{name} {value} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(where, f"{name} {value} must be <= {maximum}")
        return value

    def choice_list(self, value: Any, where: str, name: str) -> list[Any]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise self.fail(where, f"{name} is an empty list")
        return values

    def unknown_keys(self, data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(where, f"unknown key {echo(key)} (allowed: {', '.join(allowed)})")


def _resolve_arch(text: str) -> Arch:
    """A baseline name or an arch string."""
    from nas.baselines import baseline, baseline_names

    return baseline(text) if text in baseline_names() else parse_arch(text)


def _as_arch(arch: Arch | str) -> Arch:
    return arch if isinstance(arch, Arch) else _resolve_arch(arch)


def _rng(rng_or_seed: random.Random | int | None) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if rng_or_seed is None or (isinstance(rng_or_seed, int) and not isinstance(rng_or_seed, bool)):
        return random.Random(rng_or_seed)
    raise TypeError(f"expected an int seed or a random.Random, got {type(rng_or_seed).__name__}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unique(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(values))


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return format_number(value) if _is_number(value) else str(value)


def _show_list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(_show(v) for v in values) + "]"
