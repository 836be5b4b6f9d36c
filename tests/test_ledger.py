"""The study protocol once, against the backend interface: an Optuna study in memory, a scripted
controller and a fake evaluator (instant, deterministic), driven by the local backend's worker loop."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import nas
from nas.backends.local import work
from nas.ledger import ESCAPE_AFTER, Ledger
from nas.spaces import SearchSpace
from nas.storage import BatchingStorage
from nas.study import ledger as ledger_rows

optuna.logging.set_verbosity(optuna.logging.WARNING)

FOUR = {"name": "four", "stem": {"channels": 8, "stride": 1}, "head": 32, "stages": [
    {"channels": 8, "stride": 1, "block": "fused_mbconv", "kernel": [3, 5], "expansion": 1, "layers": 1},
    {"channels": 16, "stride": 2, "block": "mbconv", "kernel": [3, 5], "expansion": 1, "layers": 1}]}
SPACE = SearchSpace.from_dict(FOUR)
ARCHS = [SPACE.from_decisions(dict(zip([d.name for d in SPACE.decisions], (k1, k2))))
         for k1 in (3, 5) for k2 in (3, 5)]
A, B, C, D = (str(a) for a in ARCHS)


class Scripted(optuna.samplers.BaseSampler):
    """Proposes the architectures of ``script`` in order (the last one forever after)."""

    def __init__(self, script: list[str]) -> None:
        self.script = [SPACE.to_decisions(a) for a in script]

    def infer_relative_search_space(self, study, trial):
        return {d.name: optuna.distributions.CategoricalDistribution(d.choices) for d in SPACE.decisions}

    def sample_relative(self, study, trial, search_space):
        return self.script[min(trial.number, len(self.script) - 1)]

    def sample_independent(self, study, trial, name, distribution):
        raise AssertionError("every decision is sampled relatively")


class FakeEvaluator:
    """Instant results: accuracy from the arch's kernels; ``outcomes`` overrides the state per arch."""

    def __init__(self, outcomes: dict[str, dict] | None = None, epochs: int = 2) -> None:
        self.outcomes, self.epochs, self.seen = outcomes or {}, epochs, []

    def evaluate(self, proposal, *, report, measured):
        self.seen.append(proposal.arch)
        accuracy = 0.5 + 0.1 * ARCHS.index(nas.parse_arch(proposal.arch))
        measured({"params": 1000, "macs": 2000, "step_time": 0.01})
        for epoch in range(1, self.epochs + 1):
            reason = report(epoch, accuracy * epoch / self.epochs)
            if reason is not None:
                return {"state": "PRUNED", "reason": reason, "params": 1000, "macs": 2000, "step_time": 0.01}
        outcome = self.outcomes.get(proposal.arch, {})
        return {"state": "COMPLETE", "accuracy": accuracy, "step_time": 0.01, "params": 1000, "macs": 2000,
                "reward": accuracy, "epoch_accuracies": [accuracy], **outcome}


def make_ledger(tmp_path, script, *, trials, study=None, pruner=None):
    if study is None:
        study = optuna.create_study(storage=BatchingStorage(optuna.storages.InMemoryStorage()),
                                    direction="maximize", pruner=pruner)
    study.sampler = Scripted(script)
    return Ledger(study, SPACE, trials=trials, objectives=("reward",), lock_path=tmp_path / ".ask.lock", seed=0,
                  pruner=pruner, pruner_name="test")


def rows(ledger):
    return ledger_rows(ledger.study)


def test_repeats_are_recorded_and_use_no_budget(tmp_path):
    ledger = make_ledger(tmp_path, [A, A, B, A, C], trials=3)
    evaluator = FakeEvaluator()
    work(ledger, evaluator)
    got = rows(ledger)
    assert [r["arch"] for r in got] == [A, A, B, A, C]
    assert [r["duplicate_of"] for r in got] == [None, 0, None, 0, None]
    assert evaluator.seen == [A, B, C]  # each architecture evaluated once
    assert got[1]["reward"] == got[0]["reward"] and got[1]["state"] == "COMPLETE"
    assert all(r["state"] == "COMPLETE" for r in got) and ledger.budget_left() == 0


def test_a_twin_in_training_is_waited_for_and_its_result_reused(tmp_path):
    first = make_ledger(tmp_path, [A], trials=2)
    second = make_ledger(tmp_path, [A, A, B], trials=2, study=first.study)  # another worker, same study
    training = first.ask()
    waiting = second.ask()
    assert (training.number, training.twin) == (0, None)
    assert (waiting.number, waiting.arch, waiting.twin) == (1, A, 0)
    assert second.twin_outcome(waiting) is None  # still training
    first.record(training, FakeEvaluator().evaluate(training, report=lambda e, a: None, measured=lambda k: None))
    original = second.twin_outcome(waiting)
    assert original.number == 0
    second.record_repeat(waiting, original)
    second.sync()
    assert second.budget_left() == 1  # the repeat used none of it
    assert [r["duplicate_of"] for r in rows(second)] == [None, 0]


def test_a_twin_that_was_interrupted_is_trained_by_the_waiter(tmp_path):
    first = make_ledger(tmp_path, [A], trials=2)
    second = make_ledger(tmp_path, [A, A], trials=2, study=first.study)
    training, waiting = first.ask(), second.ask()
    first.fail_interrupted(training, "stopped by the user (Ctrl-C)")
    assert second.twin_outcome(waiting) == "train"
    owner = second.train_instead_of_twin(waiting)
    assert owner.twin is None and owner.number == 1
    second.record(owner, FakeEvaluator().evaluate(owner, report=lambda e, a: None, measured=lambda k: None))
    got = rows(second)
    assert got[0]["state"] == "FAIL" and got[0]["reason"] == "interrupted: stopped by the user (Ctrl-C)"
    assert got[1]["state"] == "COMPLETE" and got[1]["duplicate_of"] is None
    assert got[2]["state"] == "WAITING" and got[2]["retry_of"] == 0 and got[2]["arch"] == A


def test_an_interrupted_trial_is_queued_again_and_uses_no_budget(tmp_path):
    ledger = make_ledger(tmp_path, [A, B, C], trials=2)
    first = ledger.ask()
    ledger.fail_interrupted(first, "stopped (SIGTERM)")
    ledger.sync()
    assert ledger.budget_left() == 2
    again = ledger.ask()  # the queued architecture comes first, before the controller is asked
    assert (again.arch, again.number) == (A, 1)
    assert ledger.study.trials[1].user_attrs["retry_of"] == 0
    work(ledger, FakeEvaluator())  # finishes trial 1 (popped again? no: it is RUNNING) and one more
    got = rows(ledger)
    states = [(r["number"], r["state"]) for r in got]
    assert states[0] == (0, "FAIL") and ("WAITING" not in dict(states).values())


def test_pruned_trials_count_and_carry_the_reason(tmp_path):
    class PruneAtOne(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.last_step == 1

    ledger = make_ledger(tmp_path, [A, B], trials=2, pruner=PruneAtOne())
    work(ledger, FakeEvaluator())
    got = rows(ledger)
    assert [r["state"] for r in got] == ["PRUNED", "PRUNED"]
    assert got[0]["reason"] == "pruned: accuracy 0.2500 after epoch 1 (test pruner)"
    assert ledger.budget_left() == 0


def test_infeasible_candidates_use_no_budget(tmp_path):
    infeasible = {B: {"state": "FAIL", "reason": "infeasible: params 1,000 > 500", "constraint_violation": 1.0}}
    ledger = make_ledger(tmp_path, [A, B, C], trials=2)
    work(ledger, FakeEvaluator(infeasible))
    got = rows(ledger)
    assert [(r["arch"], r["state"]) for r in got] == [(A, "COMPLETE"), (B, "FAIL"), (C, "COMPLETE")]
    assert got[1]["reason"].startswith("infeasible")


def test_twenty_repeats_in_a_row_force_an_unseen_architecture(tmp_path):
    ledger = make_ledger(tmp_path, [A], trials=2)  # a controller that proposes A forever
    work(ledger, FakeEvaluator())
    got = rows(ledger)
    assert len(got) == ESCAPE_AFTER + 2
    assert all(r["duplicate_of"] == 0 for r in got[1:-1])
    escape = got[-1]
    assert escape["arch"] != A and escape["duplicate_of"] is None and escape["state"] == "COMPLETE"
    assert escape["escape"].startswith("drawn uniformly among unseen architectures after 20")


def test_the_escape_is_the_same_for_the_same_seed(tmp_path):
    archs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        ledger = make_ledger(tmp_path / name, [A], trials=3)
        work(ledger, FakeEvaluator())
        archs.append([r["arch"] for r in rows(ledger)])
    assert archs[0] == archs[1] and len(set(archs[0])) == 3


def test_dead_workers_are_found_and_their_trials_queued_again(tmp_path):
    ledger = make_ledger(tmp_path, [A, B], trials=2)
    lost = ledger.ask()
    ledger.study._storage.set_trial_user_attr(lost.trial_id, "worker", "elsewhere:1")
    assert ledger.requeue_dead(alive=lambda worker: worker != "elsewhere:1") == 1
    got = rows(ledger)
    assert got[0]["reason"] == "interrupted: worker elsewhere:1 stopped (killed or lost) before reporting"
    assert got[1]["state"] == "WAITING" and got[1]["arch"] == A


def test_a_controller_that_fails_leaves_nothing_running(tmp_path):
    class Broken(Scripted):
        def sample_relative(self, study, trial, search_space):
            raise RuntimeError("no idea")

    ledger = make_ledger(tmp_path, [A], trials=2)
    ledger.study.sampler = Broken([A])
    with pytest.raises(RuntimeError, match="no idea"):
        ledger.ask()
    states = [t.state for t in ledger.study.get_trials()]
    assert states == [TrialState.FAIL]
    assert ledger.study.trials[0].user_attrs["reason"] == "interrupted: the controller failed: no idea"
