"""nas: hardware-aware architecture search over EfficientNet-style networks.

The top-level names are imported lazily so that ``import nas`` stays fast: torch,
optuna and friends load only when a function that needs them is first used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Arch": "nas.arch",
    "Stage": "nas.arch",
    "parse_arch": "nas.arch",
    "baseline": "nas.baselines",
    "baseline_names": "nas.baselines",
    "build_model": "nas.builder",
    "count_params": "nas.cost",
    "count_macs": "nas.cost",
    "SearchSpace": "nas.spaces",
    "load_space": "nas.spaces",
    "load_dataset": "nas.data",
    "ProxyConfig": "nas.train",
    "measure_step_time": "nas.measure",
    "RewardSpec": "nas.reward",
    "evaluate": "nas.evaluate",
    "load_exported": "nas.export",
    "ScaledArch": "nas.scaling",
    "scale_arch": "nas.scaling",
    "resolve_arch": "nas.baselines",
    "read_yaml": "nas.yamlio",
    "rank_agreement": "nas.rank_stats",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
