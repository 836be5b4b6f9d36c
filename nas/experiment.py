"""Experiment files: everything one search needs, read and validated once at the edge.

```yaml
name: quickstart
space: tiny                 # a shipped space or a YAML path (relative to this file)
dataset: digits
proxy: {epochs: 3, resolution: 16, batch_size: 32}
reward: efficientnetv2      # or {preset: efficientnetv2, w: -0.07, v: -0.05}
controller: evolution       # or {name: evolution, population_size: 8}
constraints: {params: 60000, step_time: 1.2x}
trials: 12
```
``key=value`` overrides use dotted keys for nested fields (``proxy.epochs=2``). The result
is an :class:`Experiment`: frozen, typed parts (the loaded space, the proxy recipe, the
reward, the controller, the backend's options) that travel to every worker as one object.
Paths in the file are read relative to the file; paths given as overrides, relative to
the current directory.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.arch import Arch
from nas.constraints import CONSTRAINED, Bound, Constraints
from nas.reward import RewardSpec
from nas.spaces import SearchSpace
from nas.train import ProxyConfig

__all__ = ["Experiment", "ExperimentError", "DataSpec", "ControllerSpec", "RayOptions", "SimulatedOptions", "PRUNERS",
           "BACKENDS", "load_experiment", "apply_overrides", "from_dict"]

PRUNERS = ("none", "median", "successive_halving", "hyperband", "mo_asha")
BACKENDS = ("local", "ray", "simulated")
# Fields whose change makes a rerun a different search (trials, workers, backend may change).
IDENTITY_FIELDS = ("space", "dataset", "data_dir", "val_fraction", "proxy", "reward", "reference", "controller",
                   "seed", "pruner", "constraints", "storage")
_ECHO = 80  # characters of a bad value echoed in a message
_PLACEMENT = ("data_on_device", "device_memory_share")  # proxy fields that do not change results


class ExperimentError(ValueError):
    """A bad experiment file or override; one line naming the file, field and value."""


@dataclass(frozen=True)
class DataSpec:
    """The data a search trains its candidates on."""

    dataset: str = "digits"
    data_dir: str | None = None        # absolute once validated
    val_fraction: float = 0.2


@dataclass(frozen=True)
class ControllerSpec:
    """Which controller proposes candidates, with its options (see :func:`nas.controllers.make_sampler`)."""

    name: str = "evolution"
    options: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs()}


@dataclass(frozen=True)
class RayOptions:
    """How trials run on Ray: where, with what resources, under which scheduler."""

    address: str | None = None        # None: start a local Ray bound to 127.0.0.1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0       # fractional packs several proxy models on one GPU
    max_concurrent: int = 2           # trials in parallel
    scheduler: str = "none"           # "none" | "asha" (on per-epoch accuracy)
    max_failures: int = 3             # retries of infrastructure failures per trial


@dataclass(frozen=True)
class SimulatedOptions:
    """``backend: simulated``: instant evaluations on a virtual clock (see :mod:`nas.simulate`)."""

    evaluator: str = "synthetic"      # "synthetic" | "table"
    table: str | None = None          # CSV for the table evaluator (absolute once validated)
    workers: int = 1                  # simulated asynchronous workers
    noise: float = 0.005              # std of the synthetic accuracy noise
    steps_per_epoch: int = 100        # synthetic training seconds = S x steps x epochs


@dataclass(frozen=True)
class Experiment:
    """A validated experiment; build one with :func:`load_experiment` or :func:`from_dict`.

    ``space_source`` is how the space was named (a shipped name or an absolute path) and
    ``source`` the file the experiment was read from (both for messages and the run's
    record).
    """

    name: str
    space: SearchSpace
    space_source: str
    data: DataSpec = DataSpec()
    proxy: ProxyConfig = ProxyConfig()
    reward: RewardSpec = RewardSpec()
    reference: Arch | None = None      # S0/P0 and the first trial; None: the space's baseline
    controller: ControllerSpec = ControllerSpec()
    pruner: str = "none"
    constraints: Constraints = Constraints()
    trials: int = 10
    seed: int = 0
    storage: str | None = None         # None: SQLite in the run directory
    backend: str = "local"
    workers: int = 1
    keep_weights: bool = False
    device: str = "auto"
    ray: RayOptions = RayOptions()
    simulated: SimulatedOptions = SimulatedOptions()
    description: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def reference_arch(self) -> Arch | None:
        """The arch that anchors S0/P0 and is trained first: ``reference`` or the space's baseline."""
        return self.reference if self.reference is not None else self.space.baseline_arch()

    @property
    def directions(self) -> list[str]:
        return [direction for _, direction in self.reward.objectives()]

    def to_dict(self) -> dict[str, Any]:
        """The experiment as an experiment file would say it (what ``config.yaml`` records)."""
        proxy = dataclasses.asdict(self.proxy)
        proxy.pop("seed")
        reward = {"preset": self.reward.kind, **{k: v for k, v in dataclasses.asdict(self.reward).items()
                                                 if k != "kind" and v is not None}}
        return {
            "name": self.name, "description": self.description, "space": self.space_source,
            "dataset": self.data.dataset, "data_dir": self.data.data_dir, "val_fraction": self.data.val_fraction,
            "proxy": proxy, "reward": reward, "reference": str(self.reference) if self.reference else None,
            "controller": self.controller.to_dict(), "pruner": self.pruner, "constraints": self.constraints.to_dict(),
            "trials": self.trials, "seed": self.seed, "storage": self.storage, "backend": self.backend,
            "workers": self.workers, "keep_weights": self.keep_weights, "device": self.device,
            "ray": dataclasses.asdict(self.ray), "simulated": dataclasses.asdict(self.simulated),
        }

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption.

        Where the data lives during training (resident on the device or streamed) gives
        the same batches, so it may change between reruns.
        """
        data = self.to_dict()
        for key in _PLACEMENT:
            data["proxy"].pop(key, None)
        return {key: data[key] for key in IDENTITY_FIELDS}


# -- reading -------------------------------------------------------------------------------------
def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read, override and validate an experiment file (``ExperimentError`` names file and field)."""
    from nas.yamlio import read_yaml

    path = Path(path)
    try:
        data = read_yaml(path)
    except ValueError as err:
        raise ExperimentError(str(err)) from None
    if data is None:
        raise ExperimentError(f"{path}: empty file (an experiment needs at least name and space)")
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment must be a mapping, got a {type(data).__name__}")
    data = _relative_to(data, path.parent)
    data = apply_overrides(data, overrides, source=str(path))
    return from_dict(data, source=str(path))


def _relative_to(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths written in a file are relative to that file."""
    out = dict(data)

    def resolve(value: Any, *, must_exist: bool = False) -> Any:
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            return value
        candidate = folder / value
        return str(candidate.resolve()) if candidate.exists() or not must_exist else value

    if isinstance(out.get("space"), str) and out["space"].endswith((".yaml", ".yml")):
        out["space"] = resolve(out["space"], must_exist=True)
    if "data_dir" in out:
        out["data_dir"] = resolve(out["data_dir"])
    if isinstance(out.get("simulated"), dict) and "table" in out["simulated"]:
        out["simulated"] = {**out["simulated"], "table": resolve(out["simulated"]["table"])}
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], *, source: str) -> dict[str, Any]:
    """``key=value`` pairs applied to a copy of ``data``; values are numbers when they read as numbers."""
    import copy

    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ExperimentError(f"{source}: override {_echo(item)} must look like key=value")
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                # a string shorthand (controller: tpe) becomes a mapping when a field is set
                shorthand = {"controller": "name", "reward": "preset"}.get(part)
                current = target.get(part)
                target[part] = {shorthand: current} if shorthand and isinstance(current, str) else {}
            target = target[part]
        target[parts[-1]] = _override_value(raw)
    return out


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _override_value(raw: str) -> Any:
    """A number when it reads as one (``1e-3`` too, which YAML 1.1 leaves a string), else YAML."""
    from nas.yamlio import YamlError, parse_yaml

    if _NUMBER.match(raw):
        number = float(raw)
        return int(number) if re.match(r"^[+-]?\d+$", raw) else number
    if not raw:
        return None
    try:
        return parse_yaml(raw, source="an override")
    except YamlError:
        return raw


def _echo(value: Any) -> str:
    from nas._echo import echo

    return echo(value)


# -- validation ----------------------------------------------------------------------------------
_Fail = Callable[[str, str], ExperimentError]
_KNOWN = ("name", "description", "space", "dataset", "data_dir", "val_fraction", "proxy", "reward", "reference",
          "controller", "pruner", "constraints", "trials", "seed", "storage", "backend", "workers", "keep_weights",
          "device", "ray", "simulated")


def from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Experiment:
    """Validate a mapping (an experiment file's content) into an :class:`Experiment`."""
    def fail(key: str, message: str) -> ExperimentError:
        return ExperimentError(f"{source}: {key}: {message}")

    for key in data:
        if key not in _KNOWN:
            raise fail(str(key)[:_ECHO], f"unknown key (allowed: {', '.join(sorted(_KNOWN))})")
    for key in ("name", "space"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(key, f"required, a non-empty string (got {_echo(data.get(key))})")
    name = data["name"]
    if "/" in name or name in (".", "..") or len(name) > 200 or not name.isprintable():
        raise fail("name", f"{_echo(name)} must be a plain name for a folder (no '/', not '.' or '..')")
    space, space_source = _space(data["space"], fail)
    seed = _integer(data, "seed", 0, fail, default=0)
    trials = _integer(data, "trials", 1, fail, default=10)
    if trials > space.size:
        raise fail("trials", f"{trials} is more than the {space.size:,} architectures of space {space.name!r}")
    reward = _reward(data.get("reward", "efficientnetv2"), fail)
    controller = _controller(data.get("controller", "evolution"), len(reward.objectives()), fail)
    pruner = _choice(data, "pruner", PRUNERS, fail, default="none")
    backend = _choice(data, "backend", BACKENDS, fail, default="local")
    experiment = Experiment(
        name=name, description=_text(data, "description", fail), space=space, space_source=space_source,
        data=_data(data, fail), proxy=_proxy(data.get("proxy") or {}, seed, fail), reward=reward,
        reference=_reference(data.get("reference"), fail), controller=controller, pruner=pruner,
        constraints=_constraints(data.get("constraints") or {}, fail), trials=trials, seed=seed,
        storage=_storage(data.get("storage"), fail), backend=backend,
        workers=_integer(data, "workers", 1, fail, default=1), keep_weights=_flag(data, "keep_weights", fail),
        device=_text(data, "device", fail) or "auto", ray=_ray(data.get("ray") or {}, fail),
        simulated=_simulated(data.get("simulated") or {}, fail), source=source)
    _check_together(experiment, fail)
    return experiment


def _integer(data: Mapping[str, Any], key: str, minimum: int, fail: _Fail, *, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(key, f"{_echo(value)} must be a whole number >= {minimum}")
    return value


def _choice(data: Mapping[str, Any], key: str, choices: Sequence[str], fail: _Fail, *, default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise fail(key, f"{_echo(value)} not in {list(choices)}")
    return value


def _text(data: Mapping[str, Any], key: str, fail: _Fail) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise fail(key, f"must be text, got a {type(value).__name__}")
    return str(value)


def _flag(data: Mapping[str, Any], key: str, fail: _Fail) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise fail(key, f"{_echo(value)} must be true or false")
    return value


def _number(value: Any) -> float | None:
    """A finite number, also from text such as ``1e-3`` (YAML 1.1 leaves that a string)."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _space(value: str, fail: _Fail) -> tuple[SearchSpace, str]:
    from nas.spaces import load_space, shipped_spaces

    source = value if value in shipped_spaces() or not Path(value).expanduser().exists() \
        else str(Path(value).expanduser().resolve())
    try:
        return load_space(source), source
    except ValueError as err:
        raise fail("space", str(err)) from None


def _data(data: Mapping[str, Any], fail: _Fail) -> DataSpec:
    from nas.data import DATASETS

    dataset = data.get("dataset", "digits")
    if dataset not in DATASETS:
        raise fail("dataset", f"unknown dataset {_echo(dataset)} (choose from {', '.join(DATASETS)})")
    data_dir = data.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str) or not data_dir:
            raise fail("data_dir", f"{_echo(data_dir)} must be a path")
        path = Path(data_dir).expanduser()
        if not path.exists():
            raise fail("data_dir", f"{data_dir} does not exist")
        data_dir = str(path.resolve())
    val_fraction = _number(data.get("val_fraction", 0.2))
    if val_fraction is None or not 0 < val_fraction < 1:
        raise fail("val_fraction", f"{_echo(data.get('val_fraction'))} must be in (0, 1)")
    return DataSpec(dataset=dataset, data_dir=data_dir, val_fraction=float(val_fraction))


def _proxy(value: Any, seed: int, fail: _Fail) -> ProxyConfig:
    if not isinstance(value, dict):
        raise fail("proxy", f"must be a mapping, got {_echo(value)}")
    allowed = {f.name: f for f in dataclasses.fields(ProxyConfig) if f.name != "seed"}
    options = {}
    for key, item in value.items():
        if key not in allowed:
            raise fail(f"proxy.{str(key)[:_ECHO]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        # numbers written as 1e-3 arrive as text from YAML 1.1; floats fields take them
        number = _number(item) if isinstance(item, str) else None
        options[key] = number if number is not None and allowed[key].type in ("float", float) else item
    try:
        return ProxyConfig(**options, seed=seed)
    except (TypeError, ValueError) as err:
        raise fail("proxy", str(err)) from None


def _reward(value: Any, fail: _Fail) -> RewardSpec:
    from nas.reward import reward_preset

    options = {"preset": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if options is None or "preset" not in options:
        raise fail("reward", f"must be a preset name or a mapping with 'preset', got {_echo(value)}")
    extra = {k: (_number(v) if isinstance(v, str) and _number(v) is not None else v)
             for k, v in options.items() if k != "preset"}
    try:
        return reward_preset(options["preset"], **extra)
    except (TypeError, ValueError) as err:
        raise fail("reward", str(err)) from None


def _reference(value: Any, fail: _Fail) -> Arch | None:
    from nas.baselines import resolve_arch

    if value is None:
        return None
    try:
        return resolve_arch(str(value))
    except ValueError as err:
        raise fail("reference", str(err)) from None


def _controller(value: Any, objectives: int, fail: _Fail) -> ControllerSpec:
    from nas.controllers import make_sampler

    options = {"name": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if options is None or "name" not in options:
        raise fail("controller", f"must be a controller name or a mapping with 'name', got {_echo(value)}")
    name = options.pop("name")
    options = {k: (_number(v) if isinstance(v, str) and _number(v) is not None else v) for k, v in options.items()}
    try:
        make_sampler(name, seed=0, options=options, objectives=objectives)
    except (TypeError, ValueError) as err:
        raise fail("controller", str(err)) from None
    return ControllerSpec(name=name, options=tuple(sorted(options.items())))


def _constraints(value: Any, fail: _Fail) -> Constraints:
    if not isinstance(value, dict):
        raise fail("constraints", f"must be a mapping of {', '.join(CONSTRAINED)} to upper bounds, got {_echo(value)}")
    bounds = {}
    for key, raw in value.items():
        if key not in CONSTRAINED:
            raise fail(f"constraints.{str(key)[:_ECHO]}", f"unknown quantity (constrain {', '.join(CONSTRAINED)})")
        text = str(raw).strip()
        relative = text.endswith("x")
        number = _number(text[:-1] if relative else raw)
        if number is None or number <= 0:
            raise fail(f"constraints.{key}", f"{_echo(raw)} must be a positive number, or a multiple of the "
                                             "baseline's value such as 1.2x")
        bounds[key] = Bound(float(number), relative)
    return Constraints(**bounds)


def _storage(value: Any, fail: _Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("sqlite:", "postgresql", "mysql", "journal:")):
        raise fail("storage", f"{_echo(value)}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or journal:PATH")
    return value


def _ray(value: Any, fail: _Fail) -> RayOptions:
    options = _options(value, RayOptions, "ray", fail)
    if options.scheduler not in ("none", "asha"):
        raise fail("ray.scheduler", f"{_echo(options.scheduler)} not in ['none', 'asha']")
    if options.max_concurrent < 1:
        raise fail("ray.max_concurrent", f"{options.max_concurrent!r} must be >= 1")
    for key in ("cpus_per_trial", "gpus_per_trial"):
        if not isinstance(getattr(options, key), (int, float)) or getattr(options, key) < 0:
            raise fail(f"ray.{key}", f"{_echo(getattr(options, key))} must be a number >= 0")
    return options


def _simulated(value: Any, fail: _Fail) -> SimulatedOptions:
    options = _options(value, SimulatedOptions, "simulated", fail)
    if options.evaluator not in ("synthetic", "table"):
        raise fail("simulated.evaluator", f"{_echo(options.evaluator)} not in ['synthetic', 'table']")
    if options.evaluator == "table":
        if not options.table:
            raise fail("simulated.table", "the table evaluator needs a CSV file (simulated.table: PATH)")
        path = Path(options.table).expanduser()
        if not path.is_file():
            raise fail("simulated.table", f"{options.table}: no such file")
        options = dataclasses.replace(options, table=str(path.resolve()))
    if isinstance(options.workers, bool) or not isinstance(options.workers, int) or options.workers < 1:
        raise fail("simulated.workers", f"{_echo(options.workers)} must be a whole number >= 1")
    return options


def _options(value: Any, cls: type, key: str, fail: _Fail):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise fail(key, f"must be a mapping, got {_echo(value)}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    for name in value:
        if name not in allowed:
            raise fail(f"{key}.{str(name)[:_ECHO]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    try:
        return cls(**value)
    except TypeError as err:
        raise fail(key, str(err)) from None


def _check_together(experiment: Experiment, fail: _Fail) -> None:
    reference = experiment.reference_arch
    spec = experiment.reward
    if reference is None and spec.kind == "efficientnetv2" and spec.step_time_ref is None:
        raise fail("reference", f"space {experiment.space.name!r} has no baseline: set reference (an arch) or "
                                "reward step_time_ref/params_ref")
    if experiment.pruner in ("median", "successive_halving", "hyperband") and spec.multi_objective:
        raise fail("pruner", f"{experiment.pruner!r} ranks one objective; with reward multi_objective use mo_asha")
    relative = [name for name in CONSTRAINED if getattr(experiment.constraints, name) is not None
                and getattr(experiment.constraints, name).relative]
    if relative and reference is None:
        raise fail(f"constraints.{relative[0]}", "a multiple of the baseline's value needs a baseline or reference")
