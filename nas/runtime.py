"""Settings of this machine and this invocation, as opposed to the experiment's.

Where the step-time cache and the device locks live, how many threads a worker uses,
whether cached step times may be reused. The command line reads them once from the
environment (:meth:`RuntimeOptions.from_environment`) and hands the frozen object down;
no other layer reads environment variables.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

__all__ = ["RuntimeOptions", "Terminated", "stop_on_sigterm", "die_with_parent"]


@dataclass(frozen=True)
class RuntimeOptions:
    """Per-machine settings that travel with an experiment to every worker.

    Attributes:
        cache_dir: Folder of the step-time cache (``step_times.json``).
        lock_dir: Folder of the per-device lock files (shared by every ``nas`` process
            of this host, so that S is never measured while another trial trains).
        use_cache: Reuse cached step times; False measures S again (and updates the cache).
        torch_threads: Threads of each worker's torch; None leaves torch's default.
    """

    cache_dir: Path = Path.home() / ".cache" / "nas"
    lock_dir: Path = Path(tempfile.gettempdir())
    use_cache: bool = True
    torch_threads: int | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RuntimeOptions:
        """``NAS_CACHE_DIR`` and ``NAS_LOCK_DIR`` over the defaults (``~/.cache/nas``, the temp folder)."""
        env = os.environ if environ is None else environ
        options = cls()
        cache = env.get("NAS_CACHE_DIR")
        lock = env.get("NAS_LOCK_DIR")
        return cls(cache_dir=Path(cache).expanduser() if cache else options.cache_dir,
                   lock_dir=Path(lock).expanduser() if lock else options.lock_dir)

    def step_time_cache(self):
        """The step-time cache these options name, or None when cached values must not be reused."""
        from nas.measure import StepTimeCache

        return StepTimeCache(self.cache_dir / "step_times.json") if self.use_cache else None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python checks for signals: a search stops as cleanly as on Ctrl-C."""


def stop_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in this process's main thread."""
    import signal

    def handler(signum, frame) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (a worker never outlives its driver)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the driver's own signal handling must do
        pass
