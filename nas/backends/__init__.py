"""Where the trials of a search run. Every backend writes the same study through a ledger.

A backend only runs evaluations; the study protocol (budget, dedup, twins, records,
requeues) is the :class:`nas.ledger.Ledger`'s. They are picked by name from
:data:`BACKENDS`:

- ``local``: in this process, or ``workers: N`` local processes (:mod:`nas.backends.local`);
- ``ray``: Ray Tune trials on a local or an existing cluster (:mod:`nas.backends.ray`);
- ``simulated``: instant evaluations on a virtual clock (:mod:`nas.backends.simulated`).
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

from nas.ledger import Ledger
from nas.run import Run

__all__ = ["Backend", "BACKENDS", "backend", "Progress"]

Progress = Callable[[Ledger], None]  # called after trials finish: reads the ledger's new trials
Log = Callable[[str], None]

# name -> "module:class"; the module is imported only when the backend is used.
BACKENDS = {
    "local": "nas.backends.local:LocalBackend",
    "ray": "nas.backends.ray:RayBackend",
    "simulated": "nas.backends.simulated:SimulatedBackend",
}


class Backend(Protocol):
    """Runs a prepared run's trials until its budget is met."""

    def check(self, run: Run) -> None:
        """Refuse cheaply (before the search's banner) what this backend cannot run."""

    def prepare(self, run: Run, log: Log) -> None:
        """The slow setup that must succeed before the run directory is touched (data, S0)."""

    def run(self, run: Run, progress: Progress, log: Log) -> None:
        """Evaluate trials until the budget is met; Ctrl-C / SIGTERM leave nothing RUNNING."""


def backend(name: str) -> Backend:
    """The backend called ``name`` (a key of :data:`BACKENDS`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
