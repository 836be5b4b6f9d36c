"""``backend: local``: trials in this process, or in ``workers: N`` processes on one study.

Each worker runs :func:`work`: ask the ledger, wait for a twin or evaluate, record, until
the budget is met. With several workers the driver only watches the study and prints
progress; SIGINT and SIGTERM reach every worker, which ends its trial "interrupted" (the
architecture is queued again) and exits, and a worker whose driver dies is sent SIGTERM
by the kernel, so none is ever orphaned.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

from nas.backends import Log, Progress
from nas.evaluator import Evaluator
from nas.ledger import Ledger, Proposal
from nas.run import Run
from nas.runtime import Terminated

__all__ = ["LocalBackend", "work"]

_POLL_S = 1.0


def work(ledger: Ledger, evaluator: Evaluator, *, progress: Progress | None = None,
         log: Log | None = None) -> None:
    """Ask, evaluate (or wait for a twin), record, until the ledger has no more work."""
    while (proposal := ledger.ask()) is not None:
        if progress is not None:
            progress(ledger)  # what finished before this ask (the ask read the study)
        try:
            proposal = _wait_for_twin(ledger, proposal)
            if proposal is not None:
                if log is not None:
                    log(f"trial {proposal.number}: training {proposal.arch}")
                attrs = evaluator.evaluate(proposal, report=lambda e, a, p=proposal: ledger.report(p, e, a),
                                           measured=lambda known, p=proposal: ledger.measured(p, known))
                ledger.record(proposal, attrs)
        except KeyboardInterrupt as stop:
            why = "stopped (SIGTERM)" if isinstance(stop, Terminated) else "stopped by the user (Ctrl-C)"
            ledger.fail_interrupted(proposal, why)
            raise
    if progress is not None:
        ledger.sync()
        progress(ledger)


def _wait_for_twin(ledger: Ledger, proposal: Proposal) -> Proposal | None:
    """The proposal to train, or None once it was recorded as a repeat of its finished twin."""
    while proposal.twin is not None:
        outcome = ledger.twin_outcome(proposal)
        if outcome is None:
            time.sleep(_POLL_S)
        elif outcome == "train":
            return ledger.train_instead_of_twin(proposal)
        else:
            ledger.record_repeat(proposal, outcome)
            return None
    return proposal


class LocalBackend:
    """In this process (``workers: 1``) or in N local processes."""

    def __init__(self) -> None:
        self._evaluator: Evaluator | None = None

    def check(self, run: Run) -> None:
        pass  # what can fail is in the data and the device: prepare finds out

    def prepare(self, run: Run, log: Log) -> None:
        # One worker trains here: load the data and measure S0 now, before the run
        # directory is touched, so that bad data leaves nothing behind.
        if _workers(run, log) == 1:
            self._evaluator = evaluator = run.training_evaluator(log=log)
            if evaluator.reference_step is not None:
                from nas.estimate import first_order

                log(first_order(run.experiment, evaluator.reference_step, len(evaluator.data.train),
                                len(evaluator.data.val)))

    def run(self, run: Run, progress: Progress, log: Log) -> None:
        workers = _workers(run, None)
        if workers == 1:
            evaluator = self._evaluator or run.training_evaluator(log=log)
            work(run.ledger(), evaluator, progress=progress, log=log)
            return
        _run_processes(run, workers, progress)


def _workers(run: Run, log: Log | None) -> int:
    """``workers``, but never more processes than CPU cores (each worker trains with at least one)."""
    wanted, cores = run.experiment.workers, os.cpu_count() or 1
    if wanted > cores and log is not None:
        log(f"workers={wanted}: this machine has {cores} CPU cores; running {cores} workers")
    return min(wanted, cores)


def _run_processes(run: Run, workers: int, progress: Progress) -> None:
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [context.Process(target=_worker_main, args=(run, index, threads), name=f"nas-worker-{index}")
             for index in range(workers)]
    for proc in procs:
        proc.start()
    ledger = run.ledger()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(_POLL_S)
            ledger.sync()
            progress(ledger)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (same process group); SIGTERM reaches only us: pass it on.
        _stop(procs)
        raise
    ledger.sync()
    progress(ledger)
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} of {workers} workers failed (exit codes {failed}); see their messages "
                           "above")


def _stop(procs: list) -> None:
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _worker_main(run: Run, index: int, threads: int) -> None:
    """One worker process: its own study connection, controller, ledger and evaluator."""
    import torch

    from nas.runtime import die_with_parent, stop_on_sigterm

    die_with_parent()
    stop_on_sigterm()
    torch.set_num_threads(threads)
    def log(message: str) -> None:
        print(f"worker {index}: {message.strip()}", file=sys.stderr, flush=True)

    try:
        work(run.ledger(worker_index=index), run.training_evaluator(log=log if index == 0 else None), log=log)
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, OSError, LookupError) as err:  # a user's mistake (bad data, say): one line
        print(f"nas search: worker {index}: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(2)

