"""The simulated backend end to end: the real search code (study, ledger, controllers, pruners), instant
evaluations on a virtual clock."""
from __future__ import annotations

import csv
import random

import optuna
import pytest

import nas
from conftest import check_ledger, ledger_of, run_nas
from nas.experiment import load_experiment
from nas.pruners import MOASHAPruner
from nas.search import run_search

QUICK = "experiments/quickstart.yaml"


def simulate(run_dir, *overrides):
    exp = load_experiment(QUICK, ["backend=simulated", *overrides])
    run_search(exp, run_dir, fresh=True, log=lambda m: None)
    return ledger_of(run_dir)


def test_several_simulated_workers_meet_the_budget_exactly(tmp_path):
    rows = simulate(tmp_path / "run", "simulated.workers=4", "controller=random", "trials=200", "seed=1")
    check_ledger(rows, 200)
    evaluated = [r for r in rows if r["duplicate_of"] is None]
    assert len({r["arch"] for r in evaluated}) == 200 == len(evaluated)
    assert rows[0]["baseline"] and rows[0]["device"] == "simulated"
    # four workers: the virtual clock overlaps trials, so the last one ends well before the sum of all
    ends = [r for r in rows if r["state"] == "COMPLETE"]
    total = sum(r["seconds"] for r in ends)
    last = max(t.user_attrs["sim_end"] for t in nas.study.RunDir(tmp_path / "run").load_study().trials)
    assert last < total / 3


def test_same_seed_same_ledger(tmp_path):
    ledgers = [[(r["arch"], r["state"], r["reward"]) for r in simulate(tmp_path / name, "simulated.workers=4",
                                                                      "controller=random", "trials=60", "seed=9")]
               for name in ("a", "b")]
    assert ledgers[0] == ledgers[1] and len(ledgers[0]) >= 60


def test_the_synthetic_evaluator_is_deterministic_and_documented():
    from nas.ledger import Proposal
    from nas.simulate import SyntheticEvaluator

    exp = load_experiment(QUICK, ["backend=simulated", "proxy.epochs=4"])
    evaluator = SyntheticEvaluator(exp)
    arch = str(exp.space.sample(random.Random(3)))
    one = evaluator.evaluate(Proposal(1, 1, {}, arch))
    two = SyntheticEvaluator(exp).evaluate(Proposal(7, 7, {}, arch))
    assert one.attrs == two.attrs
    curve = one.epoch_accuracies
    assert len(curve) == 4 and list(curve) == sorted(curve) and curve[-1] == pytest.approx(one.attrs["accuracy"])
    cost = nas.cost.model_cost(nas.parse_arch(arch), exp.proxy.resolution, 10)
    assert one.attrs["params"] == cost.params and one.attrs["macs"] == cost.macs
    base = evaluator.evaluate(Proposal(0, 0, {}, str(exp.reference_arch), baseline=True))
    assert base.attrs["step_time"] == pytest.approx(0.010) and base.attrs["reward"] == base.attrs["accuracy"]
    assert one.seconds == pytest.approx(one.attrs["step_time"] * 100 * 4)


SPACE_OF_FOUR = """name: four
baseline: stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 mb_r1_k3_s2_e4_c32_se0.25 head_c64
stem: {channels: 16, stride: 1}
head: 64
stages:
  - {block: fused_mbconv, kernel: [3, 5], expansion: 1, se: 0, channels: 16, stride: 1, layers: 1}
  - {block: mbconv, kernel: [3, 5], expansion: 4, se: 0.25, channels: 32, stride: 2, layers: 1}
"""


def test_the_table_evaluator_reads_results_from_a_csv(tmp_path):
    (tmp_path / "four.yaml").write_text(SPACE_OF_FOUR)
    space = nas.load_space(str(tmp_path / "four.yaml"))
    archs = sorted(str(space.from_decisions(dict(zip([d.name for d in space.decisions], v))))
                   for v in ((3, 3), (3, 5), (5, 3), (5, 5)))
    with open(tmp_path / "table.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arch", "accuracy", "step_time", "params", "seconds"])
        for i, arch in enumerate(archs[:3]):  # the fourth is missing from the table
            writer.writerow([arch, 0.5 + 0.1 * i, 0.01 * (i + 1), 1000 * (i + 1), 60])
    rows = simulate(tmp_path / "run", f"space={tmp_path / 'four.yaml'}", "simulated.evaluator=table",
                    f"simulated.table={tmp_path / 'table.csv'}", "controller=random", "trials=4", "seed=0")
    by_arch = {r["arch"]: r for r in rows if r["duplicate_of"] is None}
    assert set(by_arch) == set(archs)
    for i, arch in enumerate(archs[:3]):
        assert by_arch[arch]["accuracy"] == 0.5 + 0.1 * i and by_arch[arch]["params"] == 1000 * (i + 1)
    assert by_arch[archs[3]]["state"] == "FAIL" and by_arch[archs[3]]["reason"] == "invalid: not in the table"


def test_more_trials_than_the_space_holds_is_one_line(tmp_path):
    (tmp_path / "four.yaml").write_text(SPACE_OF_FOUR)
    r = run_nas("search", QUICK, f"space={tmp_path / 'four.yaml'}", "backend=simulated", "trials=10",
                "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "trials: 10 is more than the 4 architectures of space 'four'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_constraints_end_candidates_infeasible_without_training(tmp_path):
    rows = simulate(tmp_path / "run", "controller=random", "trials=30", "seed=2", "constraints.params=60000")
    check_ledger(rows, 30)
    infeasible = [r for r in rows if str(r["reason"]).startswith("infeasible: params")]
    assert infeasible and all(r["state"] == "FAIL" and r["params"] > 60000 and r["epoch_accuracies"] is None
                              for r in infeasible)
    trained = [r for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None]
    assert all(r["params"] <= 60000 for r in trained if not r["baseline"])
    assert rows[0]["baseline"] and rows[0]["params"] > 60000 and rows[0]["state"] == "COMPLETE"  # trained anyway


def test_mo_asha_prunes_dominated_candidates(tmp_path):
    rows = simulate(tmp_path / "run", "controller=random", "trials=60", "seed=5", "pruner=mo_asha",
                    "proxy.epochs=9", "simulated.workers=2")
    check_ledger(rows, 60)
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["reason"].startswith("pruned: dominated at epoch") and r["reason"].endswith("(mo_asha)")
                          for r in pruned)
    assert all(len(r["epoch_accuracies"]) in (1, 3) for r in pruned)  # stopped at a rung


def _trial(accuracy, step_time, params, number=99):
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=accuracy,
                                      intermediate_values={1: accuracy},
                                      user_attrs={"step_time": step_time, "params": params})
    trial.number = number
    return trial


def test_mo_asha_against_a_hand_computed_dominance_case():
    study = optuna.create_study(direction="maximize")
    pruner = MOASHAPruner(eta=3, max_resource=3)
    assert pruner.rungs() == [1]
    for accuracy, step_time, params in ((0.90, 0.010, 1000), (0.80, 0.012, 1200), (0.85, 0.009, 900)):
        study.add_trial(_trial(accuracy, step_time, params))
    # trials 0 and 2 are better on all three, trial 1 is slower: 2 of n = 4 dominate, and ceil(4/3) = 2 go on
    assert pruner.prune(study, _trial(0.7, 0.011, 1100))
    assert pruner.last_reason == ("dominated at epoch 1 by 2 of 3 earlier candidates on accuracy, S and params "
                                  "(accuracy 0.7000, S 11 ms, 1,100 params; the best 1/3 go on)")
    assert not pruner.prune(study, _trial(0.7, 0.005, 500))     # fast and small: nobody dominates it
    assert not pruner.prune(study, _trial(0.88, 0.0105, 1000))  # only trial 0 dominates it: fewer than 2
