"""``backend: simulated``: N asynchronous workers on a virtual clock (the model: Syne Tune's simulator).

Candidates are scored instantly by :mod:`nas.simulate`; each takes its training seconds
of *virtual* time, so "best reward against device-hours" of a parallel search comes out
in seconds of real time. Everything else is the real code: the study, the ledger (budget,
dedup, twins, the escape), the controllers, the pruners (each epoch's accuracy arrives at
its virtual time) and the analysis. Events are handled in virtual-time order (ties by
worker), in one process, so the same seed gives the same ledger.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from nas.backends import Log, Progress
from nas.ledger import Ledger, Proposal
from nas.run import Run
from nas.simulate import SimulatedResult, simulated_evaluator

__all__ = ["SimulatedBackend"]


@dataclass(order=True)
class _Event:
    time: float
    worker: int
    epoch: int = field(compare=False)           # 1..E: an epoch ends; 0: a twin's result is due
    proposal: Proposal = field(compare=False)
    result: SimulatedResult | None = field(compare=False, default=None)
    start: float = field(compare=False, default=0.0)


class SimulatedBackend:
    """Simulated workers on a virtual clock; see the module docstring."""

    def __init__(self) -> None:
        self._evaluator = None

    def check(self, run: Run) -> None:
        self._evaluator = simulated_evaluator(run.experiment)  # a bad table fails here, before the run starts

    def prepare(self, run: Run, log: Log) -> None:
        pass

    def run(self, run: Run, progress: Progress, log: Log) -> None:
        evaluator = self._evaluator or simulated_evaluator(run.experiment)
        ledger = run.ledger()
        epochs = run.experiment.proxy.epochs
        events: list[_Event] = []
        ends: dict[int, float] = {}  # trial number -> virtual time its result is recorded

        def start(worker: int, now: float) -> None:
            """Give ``worker`` its next trial at virtual time ``now``."""
            while (proposal := ledger.ask()) is not None:  # None: no work left (nothing is interrupted here)
                progress(ledger)  # what finished before this ask (the ask read the study)
                if proposal.twin is not None:
                    heapq.heappush(events, _Event(ends.get(proposal.twin, now), worker, 0, proposal))
                    return
                result = evaluator.evaluate(proposal)
                ends[proposal.number] = now + result.seconds
                ledger.measured(proposal, {k: result.attrs.get(k) for k in ("params", "macs", "step_time")})
                if result.attrs["state"] == "COMPLETE":
                    for epoch in range(1, epochs + 1):
                        heapq.heappush(events, _Event(now + result.seconds * epoch / epochs, worker, epoch, proposal,
                                                      result, now))
                    return
                ledger.record(proposal, _timed(result.attrs, now, now))  # failed at once: next proposal

        for worker in range(run.experiment.simulated.workers):
            start(worker, 0.0)
        stopped: set[int] = set()
        while events:
            event = heapq.heappop(events)
            number = event.proposal.number
            if number in stopped:
                continue
            now = event.time
            if event.epoch == 0:
                outcome = ledger.twin_outcome(event.proposal)
                if outcome is None:  # the twin runs in another process: look again a virtual second later
                    heapq.heappush(events, _Event(now + 1.0, event.worker, 0, event.proposal))
                    continue
                if outcome == "train":
                    proposal = ledger.train_instead_of_twin(event.proposal)
                    ledger.record(proposal, _timed(evaluator.evaluate(proposal).attrs, now, now))
                else:
                    ledger.record_repeat(event.proposal, outcome)
            else:
                accuracy = event.result.epoch_accuracies[event.epoch - 1]
                reason = ledger.report(event.proposal, event.epoch, accuracy)
                if reason is None and event.epoch < epochs:
                    continue
                if reason is not None:
                    stopped.add(number)
                    ends[number] = now
                    attrs = {**event.result.attrs, "state": "PRUNED", "reason": reason, "reward": None,
                             "accuracy": None, "epoch_accuracies": list(event.result.epoch_accuracies[:event.epoch]),
                             "seconds": round(now - event.start, 3)}
                else:
                    attrs = event.result.attrs
                ledger.record(event.proposal, _timed(attrs, event.start, now))
            start(event.worker, now)
        ledger.sync()
        progress(ledger)


def _timed(attrs: dict, start: float, end: float) -> dict:
    """The ledger attributes with the trial's virtual start and end (seconds since the search began)."""
    return {**attrs, "sim_start": round(start, 3), "sim_end": round(end, 3)}
