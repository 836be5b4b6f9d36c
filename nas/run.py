"""A run: an experiment bound to its run directory, its storage and this machine's settings.

:class:`Run` is the one object that travels to every worker (a local process, a Ray
actor): frozen and picklable. Each worker opens the study, its controller, its ledger
and its evaluator from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from nas.experiment import Experiment
from nas.ledger import Ledger
from nas.runtime import RuntimeOptions
from nas.study import RunDir

__all__ = ["Run"]

# Our controllers draw per-trial randomness from (seed, trial number) and fold the study's
# trials deterministically, so every worker and every resume proposes what one process
# would; Optuna's keep one RNG stream, which must differ per worker and per resume.
_OWN_CONTROLLERS = ("reinforce", "evolution")


@dataclass(frozen=True)
class Run:
    """An experiment bound to its run directory and this machine's settings."""

    experiment: Experiment
    path: Path
    runtime: RuntimeOptions = RuntimeOptions()

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def storage_url(self) -> str:
        return self.experiment.storage or self.run_dir.default_storage()

    def open_study(self) -> optuna.Study:
        """The run's study (it must exist: :func:`nas.search.prepare` creates it)."""
        from nas.pruners import make_pruner
        from nas.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own progress
        pruner = make_pruner(self.experiment.pruner, epochs=self.experiment.proxy.epochs)
        return optuna.load_study(study_name=self.experiment.name, storage=open_storage(self.storage_url),
                                 pruner=pruner)

    def sampler(self, worker_index: int, trials_at_start: int) -> optuna.samplers.BaseSampler:
        """The controller, made to propose only architectures not yet in the study."""
        from nas.controllers import distinct, make_sampler

        exp = self.experiment
        seed = exp.seed
        if exp.controller.name not in _OWN_CONTROLLERS:
            seed = seed + 10007 * worker_index + trials_at_start
        sampler = make_sampler(exp.controller.name, seed=seed, options=exp.controller.kwargs(),
                               objectives=len(exp.reward.objectives()))
        distributions = {d.name: optuna.distributions.CategoricalDistribution(d.choices) for d in exp.space.decisions}
        return distinct(sampler, distributions)

    def ledger(self, *, worker_index: int = 0) -> Ledger:
        """This process's ledger, over a freshly opened study with this worker's controller."""
        study = self.open_study()
        study.sampler = self.sampler(worker_index, len(study._storage.get_all_trials(study._study_id,
                                                                                     deepcopy=False)))
        exp = self.experiment
        return Ledger(study, exp.space, trials=exp.trials, objectives=tuple(n for n, _ in exp.reward.objectives()),
                      lock_path=self.run_dir.lock_path, seed=exp.seed, pruner=study.pruner, pruner_name=exp.pruner)

    def training_evaluator(self, *, device: str | None = None, log: Callable[[str], None] | None = None):
        """Real proxy training in this process (data loaded and S0 measured once)."""
        from nas.evaluator import TrainingEvaluator

        weights = self.path / "weights" if self.experiment.keep_weights else None
        return TrainingEvaluator(self.experiment, self.runtime, weights_dir=weights, device=device, log=log)
