"""nas.storage: the fast reader of trials gives exactly what Optuna's own reader gives."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.storage import FastReadStorage, open_storage


def _study(url: str, directions: list[str]) -> int:
    """A study with every kind of trial and field Optuna stores."""
    study = optuna.create_study(storage=RDBStorage(url), directions=directions, study_name=f"s{len(directions)}")
    n = len(directions)

    def objective_values(trial: optuna.Trial, value: float):
        return value if n == 1 else [value, -value]

    for i in range(6):
        trial = study.ask()
        trial.suggest_categorical("block", ["mbconv", "fused_mbconv"])
        trial.suggest_int("layers", 1, 6)
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.set_user_attr("arch", f"arch {i}")
        trial.set_user_attr("epoch_accuracies", [0.5, 0.75, None])
        trial.storage.set_trial_system_attr(trial._trial_id, "escape", {"drawn": i})
        if n == 1:
            for step, v in enumerate([0.1, math.inf, -math.inf, math.nan]):
                trial.report(v, step)
        if i == 0:
            study.tell(trial, objective_values(trial, math.inf))
        elif i == 1:
            study.tell(trial, state=TrialState.FAIL)
        elif i == 2 and n == 1:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 5:
            pass  # left RUNNING
        else:
            study.tell(trial, objective_values(trial, 0.25 * i))
    study.enqueue_trial({"block": "mbconv"})  # stays WAITING
    return study._study_id


def _plain(trials) -> list[dict]:
    """Every field of each trial, NaN spelt out (NaN != NaN would fail equal trials)."""
    def fix(value):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, dict):
            return {k: fix(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return [{k: fix(v) for k, v in vars(t).items()} for t in trials]


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_fast_reader_makes_the_trials_optunas_reader_makes(tmp_path, directions):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_id = _study(url, directions)
    theirs, ours = RDBStorage(url), FastReadStorage(url)
    everything = theirs._get_trials(study_id, None, set(), -1)
    assert len(everything) == 7 and {t.state for t in everything} >= {TrialState.WAITING, TrialState.RUNNING}
    assert _plain(ours._get_trials(study_id, None, set(), -1)) == _plain(everything)
    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    assert _plain(ours._get_trials(study_id, finished, set(), -1)) == _plain(theirs._get_trials(study_id, finished,
                                                                                                   set(), -1))
    ids = [t._trial_id for t in everything]
    # what the cached storage asks after the first read: the unfinished ones it knows, and the new ones
    since = (study_id, None, {ids[0], ids[5]}, ids[3])
    assert _plain(ours._get_trials(*since)) == _plain(theirs._get_trials(*since))
    assert [t.number for t in ours._get_trials(*since)] == [0, 4, 5, 6]
    with pytest.raises(KeyError):
        ours._get_trials(study_id + 100, None, set(), -1)


def test_open_storage_reads_through_the_fast_reader(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_id = _study(url, ["maximize"])
    storage = open_storage(url)
    assert isinstance(storage.backend, FastReadStorage)
    assert _plain(storage.get_all_trials(study_id)) == _plain(RDBStorage(url).get_all_trials(study_id))
