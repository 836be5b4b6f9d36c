"""Experiment files: everything one search needs, read and validated once at the entry point.

```yaml
name: quickstart
space: tiny                 # a shipped space or a YAML path (relative to this file)
dataset: digits
proxy: {epochs: 3, resolution: 16, batch_size: 32}
reward: efficientnetv2      # or {preset: efficientnetv2, w: -0.07, v: -0.05}
controller: evolution       # or {name: evolution, population_size: 8}
trials: 12
```
``key=value`` overrides use dotted keys for nested fields (``proxy.epochs=2``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["Experiment", "ExperimentError", "RayOptions", "load_experiment", "apply_overrides"]

PRUNERS = ("none", "median", "successive_halving", "hyperband")
BACKENDS = ("local", "ray")


class ExperimentError(ValueError):
    """A bad experiment file or override; one line naming the file, field and value."""


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
class Experiment:
    """A validated experiment. ``source`` is where it was read from (for messages)."""

    name: str
    space: str
    dataset: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.2
    proxy: Mapping[str, Any] = field(default_factory=dict)
    reward: Mapping[str, Any] = field(default_factory=lambda: {"preset": "efficientnetv2"})
    reference: str | None = None       # default: the space's baseline
    controller: Mapping[str, Any] = field(default_factory=lambda: {"name": "evolution"})
    trials: int = 10
    seed: int = 0
    pruner: str = "none"
    storage: str | None = None         # None: SQLite in the run directory
    backend: str = "local"
    workers: int = 1
    keep_weights: bool = False
    device: str = "auto"
    ray: RayOptions = field(default_factory=RayOptions)
    description: str = ""
    source: str = field(default="<dict>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        data["proxy"], data["reward"], data["controller"] = dict(self.proxy), dict(self.reward), dict(self.controller)
        return data

    # -- derived objects (built where they are used, from validated fields) -----------------
    def proxy_config(self):
        from nas.train import ProxyConfig

        return ProxyConfig(**{**self.proxy, "seed": self.seed})

    def reward_spec(self):
        from nas.reward import reward_preset

        options = dict(self.reward)
        return reward_preset(options.pop("preset"), **options)

    def controller_name(self) -> str:
        return str(self.controller["name"])

    def controller_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.controller.items() if k != "name"}

    def load_space(self):
        from nas.spaces import load_space

        return load_space(self.space)

    def reference_arch(self, space):
        """The arch that anchors S0/P0 and is trained first: ``reference`` or the space's baseline."""
        from nas.spaces import _resolve_arch

        return _resolve_arch(self.reference) if self.reference else space.baseline_arch()


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read, override and validate an experiment file (``ExperimentError`` names file and field)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such experiment file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ExperimentError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        raise ExperimentError(f"{path}: empty file (an experiment needs at least name and space)")
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment must be a mapping, got a {type(data).__name__}")
    data = apply_overrides(data, overrides, source=str(path))
    # A space given as a relative YAML path is relative to the experiment file.
    space = data.get("space")
    if isinstance(space, str) and space.endswith((".yaml", ".yml")) and not Path(space).is_absolute():
        candidate = path.parent / space
        if candidate.is_file():
            data["space"] = str(candidate)
    return from_dict(data, source=str(path))


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], *, source: str) -> dict[str, Any]:
    """``key=value`` pairs (values read as YAML scalars) applied to a copy of ``data``."""
    import copy

    import yaml

    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ExperimentError(f"{source}: override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                # a string shorthand (controller: tpe) becomes a mapping when a field is set
                target[part] = {"name": target[part]} if part == "controller" and isinstance(target.get(part), str) \
                    else {"preset": target[part]} if part == "reward" and isinstance(target.get(part), str) else {}
            target = target[part]
        target[parts[-1]] = value
    return out


def from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Experiment:
    """Validate a mapping into an :class:`Experiment`."""
    def fail(key: str, message: str) -> ExperimentError:
        return ExperimentError(f"{source}: {key}: {message}")

    known = {f.name for f in dataclasses.fields(Experiment)} - {"source"}
    for key in data:
        if key not in known:
            raise fail(key, f"unknown key (allowed: {', '.join(sorted(known))})")
    for key in ("name", "space"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(key, f"required, a non-empty string (got {data.get(key)!r})")
    fields: dict[str, Any] = dict(data)

    def integer(key: str, minimum: int) -> None:
        if key in fields:
            v = fields[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise fail(key, f"{v!r} must be a whole number >= {minimum}")

    integer("trials", 1)
    integer("workers", 1)
    integer("seed", 0)
    for key, choices in (("pruner", PRUNERS), ("backend", BACKENDS)):
        if key in fields and fields[key] not in choices:
            raise fail(key, f"{fields[key]!r} not in {list(choices)}")
    if "keep_weights" in fields and not isinstance(fields["keep_weights"], bool):
        raise fail("keep_weights", f"{fields['keep_weights']!r} must be true or false")
    if "name" in fields and ("/" in fields["name"] or fields["name"] in (".", "..")):
        raise fail("name", f"{fields['name']!r} must not contain '/'")

    fields["proxy"] = _proxy(fields.get("proxy") or {}, fail)
    fields["reward"] = _reward(fields.get("reward", "efficientnetv2"), fail)
    fields["controller"] = _controller(fields.get("controller", "evolution"), fail)
    fields["ray"] = _ray(fields.get("ray") or {}, fail)
    for key in ("storage", "data_dir", "reference", "description", "device"):
        if fields.get(key) is not None:
            fields[key] = str(fields[key])
    if "val_fraction" in fields and not (isinstance(fields["val_fraction"], (int, float)) and 0 < fields["val_fraction"] < 1):
        raise fail("val_fraction", f"{fields['val_fraction']!r} must be in (0, 1)")
    experiment = Experiment(**fields, source=source)
    _check_references(experiment, fail)
    return experiment


def _proxy(value: Any, fail) -> dict[str, Any]:
    from nas.train import ProxyConfig

    if not isinstance(value, dict):
        raise fail("proxy", f"must be a mapping, got {value!r}")
    allowed = {f.name for f in dataclasses.fields(ProxyConfig)} - {"seed"}
    for key in value:
        if key not in allowed:
            raise fail(f"proxy.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    try:
        ProxyConfig(**value)
    except (TypeError, ValueError) as err:
        raise fail("proxy", str(err)) from None
    return dict(value)


def _reward(value: Any, fail) -> dict[str, Any]:
    from nas.reward import reward_preset

    options = {"preset": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if options is None or "preset" not in options:
        raise fail("reward", f"must be a preset name or a mapping with 'preset', got {value!r}")
    try:
        extra = {k: v for k, v in options.items() if k != "preset"}
        reward_preset(options["preset"], **extra)
    except (TypeError, ValueError) as err:
        raise fail("reward", str(err)) from None
    return options


def _controller(value: Any, fail) -> dict[str, Any]:
    from nas.controllers import make_sampler

    options = {"name": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if options is None or "name" not in options:
        raise fail("controller", f"must be a controller name or a mapping with 'name', got {value!r}")
    try:
        make_sampler(options["name"], seed=0, options={k: v for k, v in options.items() if k != "name"})
    except (TypeError, ValueError) as err:
        raise fail("controller", str(err)) from None
    return options


def _ray(value: Any, fail) -> RayOptions:
    if isinstance(value, RayOptions):
        return value
    if not isinstance(value, dict):
        raise fail("ray", f"must be a mapping, got {value!r}")
    allowed = {f.name for f in dataclasses.fields(RayOptions)}
    for key in value:
        if key not in allowed:
            raise fail(f"ray.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    options = RayOptions(**value)
    if options.scheduler not in ("none", "asha"):
        raise fail("ray.scheduler", f"{options.scheduler!r} not in ['none', 'asha']")
    if options.max_concurrent < 1:
        raise fail("ray.max_concurrent", f"{options.max_concurrent!r} must be >= 1")
    return options


def _check_references(experiment: Experiment, fail) -> None:
    from nas.data import DATASETS

    if experiment.dataset not in DATASETS:
        raise fail("dataset", f"unknown dataset {experiment.dataset!r} (choose from {', '.join(DATASETS)})")
    try:
        space = experiment.load_space()
    except ValueError as err:
        raise fail("space", str(err)) from None
    try:
        reference = experiment.reference_arch(space)
    except ValueError as err:
        raise fail("reference", str(err)) from None
    spec = experiment.reward_spec()
    if spec.multi_objective and experiment.controller_name() in ("reinforce", "evolution"):
        raise fail("controller", f"{experiment.controller_name()!r} optimises one reward; with reward "
                                 "multi_objective use nsga2 (or random, tpe)")
    needs_reference = spec.kind == "efficientnetv2" and spec.step_time_ref is None
    if reference is None and needs_reference:
        raise fail("reference", f"space {space.name!r} has no baseline: set reference (an arch) or reward step_time_ref/params_ref")
