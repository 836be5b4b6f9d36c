"""``backend: ray``: the trials of a search run as Ray Tune trials, on a local or an existing cluster.

The driver (the ``nas search`` process) keeps the study: a Tune searcher asks it for
candidates and tells it every result, exactly as the local worker loop does — the budget,
the baseline first, dedup, resume and every controller behave the same. Workers only
train: the trainable builds one :class:`nas.search.Candidate` per worker process,
evaluates the arch with :func:`nas.evaluate.evaluate`, reports the validation accuracy
per epoch and finally the ledger attributes.

Faults (design, decision 6):
    - a candidate's own failure (diverged, oom, invalid) is a result: reported normally,
      recorded once, never retried;
    - an infrastructure failure (a worker process killed, a node lost) is retried by Tune
      up to ``ray.max_failures`` times; a trial that still errors ends FAIL
      "interrupted: ..." and its arch is queued again, so it never uses up the budget;
    - a killed driver leaves RUNNING trials that the next ``nas search`` of the same run
      marks interrupted and queues again (:func:`nas.search.prepare`).

Without ``ray.address`` a private Ray starts bound to 127.0.0.1 with the dashboard off, so
nothing listens beyond loopback. ``import ray`` happens only inside functions here.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from nas.backends import Log, Progress
from nas.ledger import Ledger, Proposal
from nas.run import Run

__all__ = ["RayBackend", "RaySearch", "RayMissing", "INSTALL_HINT", "FINISHED"]

INSTALL_HINT = "pip install 'nas[ray]'"
FINISHED = "FINISHED"  # what a Tune searcher returns when it will suggest nothing more
METRIC, TIME_ATTR = "accuracy", "epoch"
# What the trainable knows before training ends; kept for a trial a scheduler stops.
_MEASURED = ("params", "macs", "step_time", "step_time_p10", "step_time_p90", "device", "exclusive")
_REPEATED_ERRORS = 3  # the same arch erroring this often on Ray is not bad luck: stop the search
_OBJECT_STORE_BYTES = 256 * 2**20  # a local Ray moves only configs and results


class RayMissing(ImportError, LookupError):
    """Ray (with Tune) is not installed; the message carries the install hint."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RayBackend:
    """``backend: ray``; see the module docstring."""

    def check(self, run: Run) -> None:
        _import_ray(local=not run.experiment.ray.address)  # missing Ray: one line with the install hint

    def prepare(self, run: Run, log: Log) -> None:
        pass  # the trials load their data on the cluster

    def run(self, run: Run, progress: Progress, log: Log) -> None:
        run_on_ray(run, progress=progress, log=log)


def _import_ray(*, local: bool):
    # Ray reads these when it starts its processes, which inherit them from the driver.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ctrl-C raises KeyboardInterrupt as with backend local (Tune's handler would swallow it).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # The progress lines are ours (one per finished trial); Tune's tables would interleave.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        with _single_node() if local else contextlib.nullcontext():
            import ray
            from ray import tune  # noqa: F401  (Tune is an extra of Ray)
    except ImportError as err:
        raise RayMissing(f"backend ray needs Ray Tune ({err}); install it with: {INSTALL_HINT}") from None
    return ray


_SINGLE_NODE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _single_node():
    """Ray as a single-node cluster: its processes take 127.0.0.1 as this node's address.

    Without it Ray gives its GCS this machine's network address (whatever ``_node_ip_address``
    says) and its servers listen on every interface. Ray reads the variable when it is first
    imported, so an already imported Ray gets the same setting on its constant; both are
    put back afterwards (a later ``ray start`` from this process must still form clusters).
    """
    saved = os.environ.get(_SINGLE_NODE_VAR)
    os.environ[_SINGLE_NODE_VAR] = "0"
    constants, before = None, None
    try:
        from ray._private import ray_constants as constants

        before, constants.ENABLE_RAY_CLUSTER = constants.ENABLE_RAY_CLUSTER, False
        yield
    finally:
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = before
        if saved is None:
            os.environ.pop(_SINGLE_NODE_VAR, None)
        else:
            os.environ[_SINGLE_NODE_VAR] = saved


# -- the driver's side: one study, asked and told by Tune's searcher -------------------------
class RaySearch:
    """The study as Tune's searcher and scheduler see it; every study write happens here, through the ledger.

    Plain Python (no Ray import), so the ledger logic is testable without a cluster; the
    Ray adapters (:func:`_adapters`) only forward to it.
    """

    def __init__(self, run: Run, *, progress: Progress | None = None, log: Log = _stderr) -> None:
        self.run, self.progress, self.log = run, progress, log
        self.ledger = run.ledger()
        self.live: dict[str, Proposal] = {}                    # Tune trial id -> proposal
        self.waiting: dict[int, Proposal] = {}                 # number -> proposal waiting for its twin
        self.stopped: dict[str, str] = {}                      # Tune trial id -> why a scheduler stopped it
        self.accuracies: dict[str, dict[int, float]] = collections.defaultdict(dict)
        self.measured: dict[str, dict[str, Any]] = {}
        self.tune_trials: dict[str, Any] = {}                  # Tune trial id -> Tune Trial (errors)
        self.errors: collections.Counter[str] = collections.Counter()
        self.abort: str | None = None
        self._quiet_until = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # With Ray Client (ray://) Tune runs the searcher on the head node: it reopens the
        # study there from the storage URL (a database connection does not travel).
        state = dict(self.__dict__)
        state["ledger"], state["tune_trials"], state["progress"] = None, {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.ledger = self.run.ledger()

    # -- asking ------------------------------------------------------------------------------
    def suggest(self, tune_id: str) -> dict[str, Any] | str | None:
        """A config for a new Tune trial, ``None`` (not now) or :data:`FINISHED`."""
        if self.abort is not None:
            return FINISHED
        config = self._resume_waiting(tune_id)
        if config is not None:
            return config
        now = time.monotonic()
        if now < self._quiet_until:  # Tune polls every step; the budget is full, look again soon
            return None
        proposal = self.ledger.ask()
        self._progress()
        if proposal is None:
            if self.live or self.waiting:
                # a trial in flight may still fail "interrupted" and free its slot
                self._quiet_until = now + 1.0
                return None
            return FINISHED
        if proposal.twin is not None:
            self.waiting[proposal.number] = proposal  # its twin's result will be reused
            return None
        return self._start(tune_id, proposal)

    def _start(self, tune_id: str, proposal: Proposal) -> dict[str, Any]:
        self.live[tune_id] = proposal
        return {"number": proposal.number, "trial_id": proposal.trial_id, "params": dict(proposal.params),
                "arch": proposal.arch, "baseline": proposal.baseline}

    def _resume_waiting(self, tune_id: str | None) -> dict[str, Any] | None:
        """Trials waiting for a twin: reuse its finished result; train the arch if it was cut off."""
        for number, proposal in list(self.waiting.items()):
            outcome = self.ledger.twin_outcome(proposal)
            if outcome is None:
                continue
            if outcome != "train":
                del self.waiting[number]
                self.ledger.record_repeat(proposal, outcome)
                continue
            if tune_id is not None:
                del self.waiting[number]
                return self._start(tune_id, self.ledger.train_instead_of_twin(proposal))
        return None

    # -- results -----------------------------------------------------------------------------
    def on_result(self, tune_id: str, result: dict[str, Any]) -> None:
        """A per-epoch accuracy (and what was measured before training), kept for the record."""
        proposal = self.live.get(tune_id)
        epoch, accuracy = result.get(TIME_ATTR), result.get(METRIC)
        if proposal is None or epoch is None or accuracy is None or epoch < 1:
            return
        self.accuracies[tune_id][int(epoch)] = float(accuracy)
        if tune_id not in self.measured:
            self.measured[tune_id] = {k: result[k] for k in _MEASURED if result.get(k) is not None}
            self.ledger.measured(proposal, self.measured[tune_id])

    def prune_reason(self, tune_id: str, result: dict[str, Any]) -> str | None:
        """Why the study's pruner stops this trial now (``pruner:`` in the experiment), else None."""
        proposal = self.live.get(tune_id)
        if proposal is None:
            return None
        return self.ledger.report(proposal, int(result[TIME_ATTR]), float(result[METRIC]))

    def stop(self, tune_id: str, reason: str) -> None:
        """A scheduler stops the trial; it is recorded PRUNED with ``reason`` when Tune completes it."""
        self.stopped[tune_id] = reason

    def on_complete(self, tune_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Tune is done with a trial: tell the study how it ended."""
        proposal = self.live.pop(tune_id, None)
        if proposal is None:  # not ours, or completed twice: nothing to tell
            return
        result = result or {}
        ledger = result.get("ledger")
        if error:
            self._errored(tune_id, proposal)
        elif ledger is not None:
            attrs = json.loads(ledger)
            if attrs.get("state") == "ERROR":
                error_text = attrs.get("error") or "unknown error"
                self.ledger.fail_interrupted(proposal, f"the trial raised: {_last_line(error_text)}")
                self.abort = f"trial {proposal.number} raised on a Ray worker:\n{error_text}"
            else:
                self.ledger.record(proposal, attrs)
        elif tune_id in self.stopped:
            accuracies = self.accuracies.get(tune_id, {})
            attrs = {"state": "PRUNED", "reason": self.stopped[tune_id], **self.measured.get(tune_id, {}),
                     "epoch_accuracies": [accuracies[e] for e in sorted(accuracies)] or None}
            self.ledger.record(proposal, attrs)
        else:
            self.ledger.fail_interrupted(proposal, "Ray Tune ended the trial before it reported")
        for table in (self.stopped, self.accuracies, self.measured):
            table.pop(tune_id, None)
        self._resume_waiting(None)

    def _errored(self, tune_id: str, proposal: Proposal) -> None:
        text, infrastructure, failures = _error_of(self.tune_trials.get(tune_id))
        self.errors[proposal.arch] += 1
        tries = f" {failures} time{'s' if failures != 1 else ''}" if failures else ""
        self.ledger.fail_interrupted(proposal, f"the Ray trial failed{tries}: {text}")
        if not infrastructure:
            self.abort = f"trial {proposal.number} failed on Ray outside the candidate's evaluation: {text}"
        elif self.errors[proposal.arch] >= _REPEATED_ERRORS:
            self.abort = f"trial {proposal.number}: {proposal.arch} failed on Ray {self.errors[proposal.arch]} " \
                         f"times, last: {text}"

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.ledger)

    def interrupt_all(self, why: str) -> int:
        """Trials still in flight end FAIL "interrupted: ``why``" and go back in the queue."""
        proposals = list(self.live.values()) + list(self.waiting.values())
        self.live.clear()
        self.waiting.clear()
        count = 0
        for proposal in proposals:
            try:
                self.ledger.fail_interrupted(proposal, why)
                count += 1
            except Exception as err:  # the storage may be what failed; the next run requeues it
                self.log(f"trial {proposal.number}: could not mark it interrupted ({err})")
        return count


def _error_of(tune_trial: Any) -> tuple[str, bool, int]:
    """(last line of the error, whether it is the infrastructure's, failures so far) of a Tune trial."""
    if tune_trial is None:
        return "unknown error", True, 0
    failures = int(getattr(getattr(tune_trial, "run_metadata", None), "num_failures", 0) or 0)
    # Tune writes the error files to the trial's local staging folder first; its get_error()
    # reads them from the storage path, where they arrive only at the next sync.
    text, error = "", None
    with contextlib.suppress(Exception):
        text = Path(tune_trial.error_file).read_text(errors="replace") if tune_trial.error_file else ""
    if not text:
        with contextlib.suppress(Exception):
            text = tune_trial.get_error() or ""
    with contextlib.suppress(Exception):
        if tune_trial.pickled_error_file and Path(tune_trial.pickled_error_file).is_file():
            import cloudpickle

            with open(tune_trial.pickled_error_file, "rb") as handle:
                error = cloudpickle.load(handle)
    if error is None:
        with contextlib.suppress(Exception):
            error = tune_trial.get_pickled_error()
    infrastructure = True
    if error is not None:
        from ray.exceptions import RayError, RayTaskError

        # A Python exception raised in the trainable's actor (not a lost worker or node)
        # would fail the same way again: retrying it forever would never end the search.
        infrastructure = not (isinstance(error, RayTaskError) and not isinstance(getattr(error, "cause", None), RayError))
        text = text or repr(error)
    return _last_line(text) or "unknown error", infrastructure, failures


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# -- the worker's side: the trainable ----------------------------------------------------------
_EVALUATORS: dict[Path, Any] = {}  # run dir -> evaluator: data loaded and S0 measured once per worker process


def _evaluator(run: Run):
    if run.path not in _EVALUATORS:
        _EVALUATORS[run.path] = run.training_evaluator()
    return _EVALUATORS[run.path]


def _trainable(config: dict[str, Any], run: Run, threads: int) -> None:
    """One Tune trial: evaluate the proposal, report accuracy per epoch, then the ledger attributes.

    A candidate's failure is reported as a result (``state`` FAIL), never raised, so Tune
    does not retry it; only a lost worker or node makes Tune retry. A bug here is reported
    as state ERROR: the driver stops the search with its traceback. Pruning is decided by
    the driver's scheduler, which stops the Tune trial.
    """
    from ray import tune

    epochs_done = 0
    try:
        import torch

        torch.set_num_threads(threads)
        evaluator = _evaluator(run)
        epochs = run.experiment.proxy.epochs
        proposal = Proposal(trial_id=int(config["trial_id"]), number=int(config["number"]), params=config["params"],
                            arch=config["arch"], baseline=bool(config.get("baseline")))
        known: dict[str, Any] = {}

        def report(epoch: int, accuracy: float) -> None:
            nonlocal epochs_done
            epochs_done = epoch
            # The last epoch's accuracy comes with the ledger below: a scheduler that stopped
            # the trial on it (ASHA at max_t) would otherwise lose the finished result.
            if epoch < epochs:
                tune.report({TIME_ATTR: epoch, METRIC: accuracy, **known})
            return None

        attrs = evaluator.evaluate(proposal, report=report, measured=known.update)
    except Exception:
        tune.report({TIME_ATTR: epochs_done, METRIC: None,
                     "ledger": json.dumps({"state": "ERROR", "error": traceback.format_exc()[-4000:]})})
        return
    tune.report({TIME_ATTR: len(attrs.get("epoch_accuracies") or []), METRIC: attrs.get("accuracy"),
                 "ledger": json.dumps(attrs, default=str)})


# -- Ray Tune adapters (defined on first use: importing this module does not import Ray) -------
_ADAPTERS: dict[str, type] = {}


def _adapters() -> dict[str, type]:
    if _ADAPTERS:
        return _ADAPTERS
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher

    class NasSearcher(Searcher):
        """Tune's view of :class:`RaySearch`: suggestions are study trials."""

        def __init__(self, search: RaySearch) -> None:
            super().__init__(metric=None, mode=None)
            self.search = search

        def suggest(self, trial_id: str):
            suggestion = self.search.suggest(trial_id)
            return Searcher.FINISHED if suggestion == FINISHED else suggestion

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.search.on_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.search.on_complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            pass  # the study is the record: nothing else to checkpoint

        def restore(self, checkpoint_path: str) -> None:
            pass

    class NasScheduler(FIFOScheduler):
        """Per-epoch decisions: ASHA (``ray.scheduler: asha``), then the study's own pruner."""

        def __init__(self, search: RaySearch, asha: TrialScheduler | None) -> None:
            super().__init__()
            self.search, self.asha = search, asha

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True  # metric and mode are ours (accuracy, max)

        def on_trial_add(self, tune_controller, trial) -> None:
            if self.asha is not None:
                self.asha.on_trial_add(tune_controller, trial)

        def on_trial_error(self, tune_controller, trial) -> None:
            if self.asha is not None:
                self.asha.on_trial_error(tune_controller, trial)

        def on_trial_remove(self, tune_controller, trial) -> None:
            if self.asha is not None:
                self.asha.on_trial_remove(tune_controller, trial)

        def on_trial_complete(self, tune_controller, trial, result) -> None:
            if self.asha is None:
                return
            if isinstance(result.get(METRIC), (int, float)) and isinstance(result.get(TIME_ATTR), (int, float)):
                self.asha.on_trial_complete(tune_controller, trial, {TIME_ATTR: result[TIME_ATTR], METRIC: result[METRIC]})
            else:  # a failed candidate has no accuracy to rank
                self.asha.on_trial_remove(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result) -> str:
            if "ledger" in result:
                return TrialScheduler.CONTINUE  # the trainable's last report: it has finished
            self.search.on_result(trial.trial_id, result)  # the study sees the epoch before any decision
            if self.asha is not None and self.asha.on_trial_result(tune_controller, trial, result) == TrialScheduler.STOP:
                self.search.stop(trial.trial_id, f"pruned: stopped by ASHA after epoch {int(result[TIME_ATTR])} "
                                                  f"(accuracy {float(result[METRIC]):.2f})")
                return TrialScheduler.STOP
            reason = self.search.prune_reason(trial.trial_id, result)
            if reason is not None:
                self.search.stop(trial.trial_id, reason)
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    class NasCallback(tune.Callback):
        """Keeps Tune's trial objects (their errors) and says when a trial is retried."""

        def __init__(self, search: RaySearch) -> None:
            self.search = search

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.search.tune_trials[trial.trial_id] = trial

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            study_trial = self.search.live.get(trial.trial_id)
            text, _, failures = _error_of(trial)
            number = study_trial.number if study_trial is not None else "?"
            self.search.log(f"trial {number}: the Ray trial failed ({text}); retry {failures} of "
                            f"{self.search.run.experiment.ray.max_failures}")

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.search.tune_trials.pop(trial.trial_id, None)

    _ADAPTERS.update(searcher=NasSearcher, scheduler=NasScheduler, callback=NasCallback)
    return _ADAPTERS


# -- running a search --------------------------------------------------------------------------
def run_on_ray(run: Run, *, progress: Progress | None = None, log: Log = _stderr) -> None:
    """Run (or resume) ``run`` to its budget with Ray Tune; the study is written by this process only.

    Raises:
        RayMissing: Ray Tune is not installed.
        RuntimeError: a trial failed outside the candidate's evaluation (a bug, or a Ray
            worker that cannot import ``nas``); the trial is queued again for the next run.
    """
    ray = _import_ray(local=not run.experiment.ray.address)
    from ray import tune

    exp, options = run.experiment, run.experiment.ray
    adapters = _adapters()
    started = _connect(ray, options, log)
    try:
        search = RaySearch(run, progress=progress, log=log)
        asha = None
        if options.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            asha = ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=exp.proxy.epochs,
                                 grace_period=1, reduction_factor=2)
        resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, run=run, threads=max(1, int(options.cpus_per_trial))), resources)
        storage = (run.path / "ray").resolve()
        storage.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=adapters["searcher"](search), scheduler=adapters["scheduler"](search, asha),
                num_samples=-1, max_concurrent_trials=options.max_concurrent, reuse_actors=True,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=f"{exp.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=options.max_failures), verbose=0,
                callbacks=[adapters["callback"](search)]),
        )
        try:
            tuner.fit()
        except KeyboardInterrupt as stop:
            search.interrupt_all("stopped (SIGTERM)" if type(stop).__name__ == "Terminated"
                                 else "stopped by the user (Ctrl-C)")
            raise
        except BaseException as err:
            search.interrupt_all(f"the Ray driver stopped ({type(err).__name__}: {_last_line(str(err))})")
            raise
        search.ledger.sync()
        search._progress()
        left = search.interrupt_all("Ray Tune ended before the trial reported")
        if left:
            log(f"{left} trial(s) were still in flight when Ray Tune ended; they are queued again")
        if search.abort is not None:
            raise RuntimeError(search.abort)
    finally:
        if started:
            ray.shutdown()


def _trial_name(trial) -> str:
    return f"trial_{trial.config.get('number', 'x')}_{trial.trial_id}"


def _connect(ray, options, log: Log) -> bool:
    """Join ``options.address``, or start a private Ray on 127.0.0.1; True when this call did it."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if options.address:
        ray.init(address=options.address, **common)
        log(f"connected to the Ray cluster at {options.address}")
        return True
    # "local" starts a new cluster even if RAY_ADDRESS is set or another one runs on this host;
    # every Ray process of it binds 127.0.0.1 and the dashboard is off: nothing is reachable
    # from another machine.
    with _single_node():
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=_OBJECT_STORE_BYTES, **common)
    addresses = {ray.get_runtime_context().gcs_address.rpartition(":")[0]}
    addresses |= {node["NodeManagerAddress"] for node in ray.nodes()}
    if addresses != {"127.0.0.1"}:
        ray.shutdown()
        raise RuntimeError(f"the private Ray took the address(es) {sorted(addresses)}, not 127.0.0.1 only: "
                           "stopped it rather than listen beyond loopback")
    return True
