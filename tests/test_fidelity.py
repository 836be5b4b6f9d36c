"""`nas fidelity`: the proxy's ranking against longer training, kept with the run and resumed."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import run_nas


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    """A finished search of 12 trials on the simulated backend (instant, a real study)."""
    from nas.experiment import from_dict
    from nas.search import run_search

    exp = from_dict({"name": "fid", "space": "tiny", "dataset": "digits", "backend": "simulated",
                     "proxy": {"epochs": 3, "resolution": 16, "batch_size": 32}, "controller": "random",
                     "trials": 12, "seed": 0})
    path = tmp_path_factory.mktemp("fidelity") / "run"
    run_search(exp, path, fresh=True, log=lambda message: None)
    return path


@pytest.fixture
def run(simulated_run, tmp_path):
    """A private copy of the simulated run (each test writes its own fidelity.json)."""
    shutil.copytree(simulated_run, tmp_path / "run")
    return tmp_path / "run"


class CountingTrainer:
    """A stand-in for the long training: a fixed accuracy per trial, and a count of calls."""

    def __init__(self, accuracy=lambda number: 0.5 + number / 100, fail: set[int] = frozenset()):
        self.accuracy, self.fail, self.calls = accuracy, fail, []

    def __call__(self, number, arch, proxy):
        from nas.evaluator import trial_seed
        from nas.train import CandidateFailure

        self.calls.append((number, str(arch), proxy.epochs, proxy.resolution))
        assert proxy.seed == trial_seed(0, number)  # the search's own per-trial seed
        if number in self.fail:
            raise CandidateFailure("diverged: loss nan at epoch 2 step 3")
        return self.accuracy(number)


def rows_of(run):
    from nas.study import RunDir, ledger

    return {r["number"]: r for r in ledger(RunDir(run).load_study())}


def test_selection_is_the_best_by_reward_and_a_seeded_draw(run):
    from nas.fidelity import select_trials
    from nas.study import RunDir, ledger

    rows = ledger(RunDir(run).load_study())
    chosen = select_trials(rows, top=3, random_count=2, key="reward", seed=0)
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None]
    best = sorted(complete, key=lambda r: -r["reward"])[:3]
    assert [r["number"] for r, how in chosen if how == "top"] == [r["number"] for r in best]
    drawn = [r["number"] for r, how in chosen if how == "random"]
    assert len(drawn) == 2 and not set(drawn) & {r["number"] for r in best}
    assert select_trials(rows, top=3, random_count=2, key="reward", seed=0) == chosen
    by_accuracy = select_trials(rows, top=2, random_count=0, key="accuracy", seed=0)
    assert [r["accuracy"] for r, _ in by_accuracy] == sorted((r["accuracy"] for r in complete), reverse=True)[:2]
    with pytest.raises(ValueError, match="asks for 40 trials; the run has 12"):
        select_trials(rows, top=30, random_count=10, key="reward", seed=0)


def test_statistics_are_those_of_the_retrained_pairs(run):
    from nas.fidelity import check_fidelity
    from nas.rank_stats import kendall_tau, rank_agreement, spearman_rho

    trainer = CountingTrainer()
    check = check_fidelity(run, top=3, random_count=2, epochs=6, trainer=trainer, log=lambda m: None)
    rows = rows_of(run)
    proxy = [rows[t.number]["accuracy"] for t in check.trials]
    long = [0.5 + t.number / 100 for t in check.trials]
    assert [t.proxy_accuracy for t in check.trials] == proxy
    assert [t.long_accuracy for t in check.trials] == long
    assert [t.chosen for t in check.trials] == ["top"] * 3 + ["random"] * 2
    data = check.to_dict()
    assert data["kendall_tau"] == pytest.approx(kendall_tau(proxy, long))
    assert data["spearman_rho"] == pytest.approx(spearman_rho(proxy, long))
    expected = rank_agreement(proxy, long, k=3, level=0.9, seed=0)
    assert data["kendall_tau_ci"] == pytest.approx([expected.kendall.low, expected.kendall.high])
    assert data["spearman_rho_ci"] == pytest.approx([expected.spearman.low, expected.spearman.high])
    assert data["top_k_overlap"] == expected.top_k_overlap
    assert [(t["number"], t["proxy_accuracy"], t["long_accuracy"]) for t in data["trials"]] == \
        list(zip([t.number for t in check.trials], proxy, long))
    assert {c[2:] for c in trainer.calls} == {(6, 16)}  # the long setting; the proxy's resolution by default


def test_a_rerun_trains_nothing_and_an_interrupted_check_resumes(run):
    from nas.fidelity import FIDELITY_FILE, check_fidelity

    class Stop(KeyboardInterrupt):
        pass

    def stop_at_third(number, arch, proxy):
        if len(first.calls) == 2:
            raise Stop()
        return first(number, arch, proxy)

    first = CountingTrainer()
    with pytest.raises(Stop):
        check_fidelity(run, top=3, random_count=2, epochs=4, resolution=8, trainer=stop_at_third, log=lambda m: None)
    kept = json.loads((run / FIDELITY_FILE).read_text())["checks"][0]
    assert (kept["epochs"], kept["resolution"], len(kept["retrained"])) == (4, 8, 2)
    second = CountingTrainer()
    lines = []
    check = check_fidelity(run, top=3, random_count=2, epochs=4, resolution=8, trainer=second, log=lines.append)
    assert len(second.calls) == 3 and not {c[0] for c in second.calls} & {c[0] for c in first.calls}
    assert sum("retrained before" in line for line in lines) == 2 and len(lines) == 5
    third = CountingTrainer()
    again = check_fidelity(run, top=3, random_count=2, epochs=4, resolution=8, trainer=third, log=lambda m: None)
    assert third.calls == [] and again == check
    # another setting is another check; the first one is kept
    check_fidelity(run, top=1, random_count=1, epochs=5, trainer=third, log=lambda m: None)
    from nas.fidelity import read_checks

    assert [(c.epochs, c.resolution, len(c.trials)) for c in read_checks(run)] == [(4, 8, 5), (5, 16, 2)]


def test_a_failed_long_training_is_kept_and_left_out_of_the_ranking(run):
    from nas.fidelity import check_fidelity

    rows = rows_of(run)
    top = sorted((r for r in rows.values() if r["state"] == "COMPLETE"), key=lambda r: -r["reward"])[0]["number"]
    trainer = CountingTrainer(fail={top})
    check = check_fidelity(run, top=2, random_count=2, epochs=3, trainer=trainer, log=lambda m: None)
    failed = [t for t in check.trials if t.long_accuracy is None]
    assert [t.number for t in failed] == [top] and failed[0].reason.startswith("diverged")
    assert check.agreement.n == 3
    retry = CountingTrainer()
    check_fidelity(run, top=2, random_count=2, epochs=3, trainer=retry, log=lambda m: None)
    assert retry.calls == []  # a failure is a result: not trained again


def test_a_low_tau_warns_that_the_proxy_is_unreliable(run):
    from nas.fidelity import check_fidelity

    rows = rows_of(run)
    reversed_ranking = CountingTrainer(accuracy=lambda number: 1.0 - rows[number]["accuracy"])
    check = check_fidelity(run, top=2, random_count=3, epochs=2, trainer=reversed_ranking, log=lambda m: None)
    assert check.agreement.kendall.estimate < 0.5 and check.reliable is False
    assert "Kendall's tau -" in check.summary()


def test_cli_retrains_reports_and_reuses(run):
    proc = run_nas("fidelity", str(run), "--top", "1", "--random", "1", "--epochs", "1", "--resolution", "8",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"kendall_tau", "kendall_tau_ci", "spearman_rho", "spearman_rho_ci", "top_k_overlap", "trials"} <= set(data)
    assert len(data["trials"]) == 2 and all(0 <= t["long_accuracy"] <= 1 for t in data["trials"])
    assert all(set(t) >= {"number", "proxy_accuracy", "long_accuracy"} for t in data["trials"])
    assert [line.startswith("[") for line in proc.stderr.splitlines() if "trial" in line] == [True, True]
    for key in ("kendall_tau", "spearman_rho"):
        assert data[key] is None or -1 <= data[key] <= 1 and not math.isnan(data[key])
    again = run_nas("fidelity", str(run), "--top", "1", "--random", "1", "--epochs", "1", "--resolution", "8")
    assert again.returncode == 0 and again.stderr.count("retrained before") == 2
    assert "Kendall's tau" in again.stdout


@pytest.mark.parametrize("args, word", [
    (["--top", "0", "--random", "1", "--epochs", "2"], "--top"),
    (["--top", "1", "--random", "-1", "--epochs", "2"], "--random"),
    (["--top", "1", "--random", "1", "--epochs", "0"], "--epochs"),
    (["--top", "1", "--random", "1", "--epochs", "2", "--resolution", "4"], "resolution"),
    (["--top", "10", "--random", "5", "--epochs", "2"], "asks for 15 trials"),
])
def test_cli_bad_arguments_are_one_line(run, args, word):
    proc = run_nas("fidelity", str(run), *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and word in proc.stderr


def test_cli_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = run_nas("fidelity", str(tmp_path), "--top", "2", "--random", "1", "--epochs", "2")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"nas fidelity: error: {tmp_path}: not a run directory (no config.yaml; start one with nas search)"]
    assert not (tmp_path / "fidelity.json").exists()


def test_a_damaged_fidelity_file_is_one_line(run):
    (run / "fidelity.json").write_text("{not json")
    proc = run_nas("fidelity", str(run), "--top", "1", "--random", "1", "--epochs", "1")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "fidelity.json: not a fidelity file" in proc.stderr


def test_a_wider_selection_reuses_what_was_retrained(run):
    from nas.fidelity import check_fidelity

    first = CountingTrainer()
    narrow = check_fidelity(run, top=1, random_count=1, epochs=3, trainer=first, log=lambda m: None)
    second = CountingTrainer()
    wide = check_fidelity(run, top=3, random_count=2, epochs=3, trainer=second, log=lambda m: None)
    assert narrow.trials[0].number in [t.number for t in wide.trials[:3]]
    assert narrow.trials[0].number not in [c[0] for c in second.calls]
    assert len(first.calls) + len(second.calls) == len({t.number for t in narrow.trials + wide.trials})
    assert [t.chosen for t in wide.trials] == ["top"] * 3 + ["random"] * 2 and wide.top == 3
