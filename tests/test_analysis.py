"""nas.analysis and nas.plots: fronts, hypervolume, rescoring, rediscovery, on tables and on a real run."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_ARCH, run_nas
from nas import analysis
from nas.pareto import edf





# -- tables built by hand -----------------------------------------------------------------------------
def table(rows: list[dict]) -> pd.DataFrame:
    """A trials table like trials_frame's, one dict per trial (defaults fill the rest)."""
    base = {"state": "COMPLETE", "arch": TINY_ARCH, "accuracy": 0.5, "step_time": 0.1, "params": 100,
            "macs": 1000, "reward": 0.5, "reason": None, "duplicate_of": None, "baseline": False}
    return pd.DataFrame([{**base, "number": i, **row} for i, row in enumerate(rows)])


def _ref_dominates(a, b, maximize) -> bool:
    return all((x >= y) if m else (x <= y) for x, y, m in zip(a, b, maximize)) and \
        any((x > y) if m else (x < y) for x, y, m in zip(a, b, maximize))


def _ref_ranks(points, maximize) -> list[int]:
    ranks, rank = [-1] * len(points), 0
    while -1 in ranks:
        left = [i for i, r in enumerate(ranks) if r < 0]
        for i in [i for i in left if not any(_ref_dominates(points[j], points[i], maximize) for j in left)]:
            ranks[i] = rank
        rank += 1
    return ranks


def _random_trials(seed: int, n: int = 36) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Few distinct values per objective force ties; copied rows give exact duplicates.
    rows = [{"accuracy": float(rng.integers(0, 4)) / 4, "step_time": float(rng.integers(1, 5)) / 100,
             "params": int(rng.integers(1, 5)) * 1000, "macs": int(rng.integers(1, 4)) * 10**6} for _ in range(n)]
    rows += [dict(rows[i]) for i in rng.integers(0, n, size=6)]
    rows += [{"state": "FAIL", "accuracy": None, "step_time": None, "reward": None, "reason": "diverged"},
             {"state": "PRUNED", "accuracy": 0.99, "step_time": 0.001, "params": 1, "reason": "pruned"}]
    return table(rows)


OBJECTIVE_SETS = [["accuracy", "step_time"], ["accuracy", "step_time", "params"], ["accuracy", "params", "macs"],
                  ["accuracy", "step_time", "params", "macs"], ["step_time", "params"]]


@pytest.mark.parametrize("seed, objectives", list(itertools.product(range(3), OBJECTIVE_SETS)))
def test_front_and_ranks_match_brute_force(seed, objectives):
    frame = _random_trials(seed)
    maximize = [o == "accuracy" for o in objectives]
    done = frame[frame["state"] == "COMPLETE"]
    points = done[objectives].to_numpy(dtype=float).tolist()
    expected = _ref_ranks(points, maximize)
    ranked = analysis.pareto_ranks_table(frame, objectives)
    assert dict(zip(ranked["number"], ranked["rank"])) == dict(zip(done["number"], expected))
    front = analysis.pareto_table(frame, objectives)
    assert sorted(front["number"]) == sorted(n for n, r in zip(done["number"], expected) if r == 0)
    assert list(front["number"]) == sorted(front["number"])  # trial order
    # ties: identical points share the front
    assert all(r == 0 for n, r in zip(done["number"], expected) if n in set(front["number"]))


def test_front_leaves_out_unfinished_and_duplicates():
    frame = table([{"accuracy": 0.5}, {"accuracy": 0.9, "duplicate_of": 3}, {"state": "PRUNED", "accuracy": 0.99},
                   {"accuracy": 0.9}])
    assert list(analysis.pareto_table(frame)["number"]) == [3]
    assert list(analysis.pareto_table(frame, include_duplicates=True)["number"]) == [1, 3]
    with pytest.raises(ValueError, match="unknown objective 'speed'"):
        analysis.pareto_table(frame, ["accuracy", "speed"])


def test_hypervolume_by_hand():
    frame = table([{"accuracy": 0.8, "step_time": 2.0}, {"accuracy": 0.6, "step_time": 1.0},
                   {"accuracy": 0.5, "step_time": 2.5}])  # the last is dominated
    # boxes [0, 0.8] x [2, 3] and [0, 0.6] x [1, 3]: 0.8 + 1.2 - 0.6 overlap
    assert analysis.front_hypervolume(frame, ["accuracy", "step_time"], [0.0, 3.0]) == pytest.approx(1.4)
    three = table([{"accuracy": 1.0, "step_time": 1.0, "params": 1}, {"accuracy": 0.5, "step_time": 0.0, "params": 0}])
    # boxes 1 x 1 x 1 and 0.5 x 2 x 2, overlapping in 0.5 x 1 x 1
    assert analysis.front_hypervolume(three, ["accuracy", "step_time", "params"], [0, 2, 2]) == pytest.approx(2.5)
    assert analysis.default_reference(frame, ["accuracy", "step_time"]) == pytest.approx([0.0, 2.75])
    assert analysis.front_hypervolume(frame, ["accuracy", "step_time"], [0.9, 3.0]) == 0.0
    with pytest.raises(ValueError, match="reference has 1 values for 2 objectives"):
        analysis.front_hypervolume(frame, ["accuracy", "step_time"], [0.0])


def test_rescore_by_hand():
    frame = table([{"baseline": True, "accuracy": 0.4, "step_time": 0.1, "params": 100},
                   {"accuracy": 0.5, "step_time": 0.2, "params": 200},
                   {"state": "FAIL", "accuracy": None, "step_time": None, "params": 50, "reward": None}])
    reward = analysis.rescore(frame)
    assert reward[0] == pytest.approx(0.4, rel=1e-12)
    assert reward[1] == pytest.approx(0.5 * 2 ** -0.07 * 2 ** -0.05, rel=1e-12)
    assert math.isnan(reward[2])
    assert list(analysis.rescore(frame, w=0, v=0)[:2]) == pytest.approx([0.4, 0.5], rel=1e-12)
    # S0 halved: every reward scales by exactly 2^w; P0 doubled by 2^-v
    halved = analysis.rescore(frame, step_time_ref=0.05)
    assert list(halved[:2] / reward[:2]) == pytest.approx([2 ** -0.07] * 2, rel=1e-12)
    assert list(analysis.rescore(frame, params_ref=200)[:2] / reward[:2]) == pytest.approx([2 ** 0.05] * 2, rel=1e-12)
    assert analysis.rescore(frame, w=-0.5)[1] == pytest.approx(0.5 * 2 ** -0.5 * 2 ** -0.05, rel=1e-12)
    with pytest.raises(ValueError, match="no COMPLETE baseline"):
        analysis.rescore(frame.iloc[1:])


def test_dominating_baseline_and_top():
    frame = table([{"baseline": True, "accuracy": 0.5, "step_time": 0.1, "params": 100, "reward": 0.5},
                   {"accuracy": 0.6, "step_time": 0.1, "params": 100, "reward": 0.6},
                   {"accuracy": 0.5, "step_time": 0.1, "params": 100, "reward": 0.5},
                   {"accuracy": 0.7, "step_time": 0.2, "params": 50, "reward": 0.7},
                   {"accuracy": 0.6, "step_time": 0.05, "params": 90, "reward": 0.65},
                   {"state": "FAIL", "accuracy": None, "step_time": None, "reward": None}])
    assert list(analysis.dominating_baseline(frame)["number"]) == [1, 4]
    assert list(analysis.dominating_baseline(frame, ["accuracy", "params"])["number"]) == [1, 3, 4]
    assert list(analysis.top_trials(frame, 3)["number"]) == [3, 4, 1]
    assert list(analysis.top_trials(frame, 2, by="step_time")["number"]) == [4, 0]
    with pytest.raises(ValueError, match="no COMPLETE baseline"):
        analysis.dominating_baseline(frame.iloc[1:])


def test_best_so_far():
    frame = table([{"reward": 0.2}, {"state": "FAIL", "reward": None}, {"reward": 0.5}, {"reward": 0.3}])
    curve = analysis.best_so_far(frame)
    assert list(curve["best"]) == [0.2, 0.2, 0.5, 0.5]


def test_decision_stats_stage_choices_and_edfs():
    archs = [TINY_ARCH, TINY_ARCH.replace("fmb_r2_k3", "fmb_r2_k5"),
             TINY_ARCH.replace("mb_r2_k3_s2_e4_c64", "mb_r3_k3_s2_e4_c64"), TINY_ARCH.replace("fmb_r1_k3_s1_e1", "mb_r1_k3_s1_e1")]
    frame = table([{"arch": a, "reward": r, "accuracy": acc, "param.stage2.kernel": k}
                   for a, r, acc, k in zip(archs, [0.9, 0.8, 0.1, 0.2], [0.9, 0.7, 0.4, 0.3], [3, 5, 3, 3])])
    stats = analysis.decision_stats(frame, k=2).set_index("choice")
    assert stats.loc[3, "top_share"] == 0.5 and stats.loc[5, "top_share"] == 0.5
    assert stats.loc[3, "all_share"] == 0.75 and stats.loc[3, "mean_reward"] == pytest.approx(0.4)
    assert set(stats["decision"]) == {"stage2.kernel"} and set(stats["stage"]) == {2}
    choices = analysis.stage_choices(frame, k=2).set_index("stage")
    assert choices.loc[1, "block"] == "fused_mbconv" and choices.loc[1, "block_share"] == 1.0
    assert choices.loc[2, "kernel"] == 3 and choices.loc[2, "kernel_share"] == 0.5  # tie: the better trial's
    assert choices.loc[3, "layers"] == 2
    edfs = analysis.error_edfs(frame)
    x, f = edfs["stage2.kernel"][3]
    ex, ef = edf([0.1, 0.6, 0.7])
    assert np.allclose(x, ex) and np.allclose(f, ef)
    with pytest.raises(ValueError, match="unknown decision 'stage9.kernel'"):
        analysis.error_edfs(frame, ["stage9.kernel"])


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnetv2_s", "efficientnetv2_b3"])
def test_rediscovery_of_a_baseline_by_itself_is_one(name):
    import nas

    assert analysis.rediscovery_score(nas.baseline(name), nas.baseline(name)) == 1.0
    assert analysis.rediscovery_score(str(nas.baseline(name)), nas.baseline(name)) == 1.0
    assert analysis.rediscovery(pd.DataFrame([{"number": 0, "state": "COMPLETE", "arch": str(nas.baseline(name)),
                                               "accuracy": 0.5, "step_time": 0.1, "params": 1, "reward": 0.5,
                                               "duplicate_of": None, "baseline": False}]), name).score == 1.0


def test_rediscovery_partial_by_hand():
    kernel = TINY_ARCH.replace("mb_r2_k3_s2_e4_c64", "mb_r2_k5_s2_e4_c64")  # 1 of 12 fields differs
    assert analysis.rediscovery_score(kernel, TINY_ARCH) == pytest.approx(11 / 12)
    two = TINY_ARCH.replace("fmb_r1_k3_s1_e1_c16", "mb_r1_k3_s1_e1_c16_se0.25").replace("fmb_r2_k3", "fmb_r1_k3")
    assert analysis.rediscovery_score(two, TINY_ARCH) == pytest.approx(10 / 12)
    short = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 fmb_r2_k3_s2_e4_c32 head_c256"  # the third stage is missing
    assert analysis.rediscovery_score(short, TINY_ARCH) == pytest.approx(8 / 12)
    agree = analysis.stage_agreement(kernel, TINY_ARCH)
    assert agree.loc[2, "kernel"] == False and agree[["block", "expansion", "layers"]].all().all()  # noqa: E712

    frame = table([{"baseline": True, "reward": 0.5}, {"duplicate_of": 0, "reward": 0.5},
                   {"arch": kernel, "reward": 0.6}, {"arch": short, "reward": 0.1}])
    found = analysis.rediscovery(frame, k=2)  # the enqueued baseline is not "found"; its re-proposal is
    assert list(found.per_trial["number"]) == [2, 1]
    assert found.score == pytest.approx((11 / 12 + 1) / 2)
    assert list(found.per_stage["kernel"]) == [1.0, 1.0, 0.5]
    assert found.per_stage["agreement"].iloc[2] == pytest.approx(0.875)
    assert analysis.rediscovery(frame, baseline=kernel, k=1).score == 1.0
    json.dumps(found.to_dict())


# -- a real run --------------------------------------------------------------------------------------
def test_trials_frame_of_a_run(run):
    frame = analysis.trials_frame(run)
    assert len(frame) == 4 and list(frame["number"]) == [0, 1, 2, 3]
    for column in ("state", "arch", "accuracy", "step_time", "params", "macs", "reward", "reason", "duplicate_of",
                   "epoch_accuracies", "device", "duration", "error", "baseline", "param.stage1.block"):
        assert column in frame, column
    done = frame[frame["state"] == "COMPLETE"]
    assert (done["duration"] > 0).all() and np.allclose(done["error"], 1 - done["accuracy"])
    assert all(len(e) == 1 for e in done["epoch_accuracies"]) and bool(frame["baseline"].iloc[0])
    assert frame.attrs["config"]["name"] == "quickstart" and str(frame["params"].dtype) == "Int64"
    summary = analysis.run_summary(run)
    assert summary["trials"] == 4 and summary["controller"] == "evolution" and summary["space"] == "tiny"
    assert summary["baseline"]["arch"] == TINY_ARCH and summary["devices"]


def test_rescore_a_run_without_retraining(run):
    frame = analysis.trials_frame(run)
    done = frame["state"] == "COMPLETE"
    again = analysis.rescore(run)  # the run's own constants and reference reproduce its rewards
    assert np.allclose(again[done], frame.loc[done, "reward"].astype(float), rtol=1e-9)
    plain = analysis.rescore(run, w=0, v=0)
    assert np.allclose(plain[done], frame.loc[done, "accuracy"].astype(float), rtol=1e-12)


def test_optuna_dashboard_reads_the_storage(run):
    """What optuna-dashboard does with `optuna-dashboard sqlite:///RUN/study.db`, via Optuna's public API."""
    import optuna

    from nas.report import dashboard_command
    from nas.study import RunDir

    storage = RunDir(run).storage_url()
    assert dashboard_command(run) == f"optuna-dashboard {storage}" and storage.startswith("sqlite:///")
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["quickstart"] and summaries[0].n_trials == 4
    study = optuna.load_study(study_name="quickstart", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and trials[0].user_attrs["baseline"] is True
    assert {"arch", "accuracy", "step_time", "params", "reward"} <= set(trials[0].user_attrs)
    assert trials[0].user_attrs["arch"] == TINY_ARCH and "stage1.block" in trials[0].params


def test_pareto_and_compare_commands(run, tmp_path):
    proc = run_nas("pareto", str(run), "--json", "--csv", str(tmp_path / "f.csv"), "--plot", str(tmp_path / "f.svg"),
                   check=True)
    rows = json.loads(proc.stdout)
    assert rows and {"number", "arch", "accuracy", "step_time", "params", "reward"} <= set(rows[0])
    assert [r["number"] for r in rows] == list(analysis.pareto_table(run)["number"])
    csv = pd.read_csv(tmp_path / "f.csv")
    assert list(csv["number"]) == [r["number"] for r in rows] and csv["params"].dtype.kind == "i"
    assert "<svg" in (tmp_path / "f.svg").read_text()[:2000]

    proc = run_nas("compare", str(run), str(run), "--json", "--out", str(tmp_path / "c.png"), check=True)
    data = json.loads(proc.stdout)
    assert len(data["runs"]) == 2 and data["runs"][0]["hypervolume"] == data["runs"][1]["hypervolume"] > 0
    assert data["objectives"] == ["accuracy", "step_time", "params"] and len(data["reference"]) == 3
    assert data["runs"][0]["best_reward"] == pytest.approx(float(analysis.trials_frame(run)["reward"].max()))
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_of_a_run(run, tmp_path):
    from nas import plots

    for path in (plots.plot_front(run, tmp_path / "front.png", objectives=["accuracy", "macs"]),
                 plots.plot_progress([run, run], tmp_path / "progress.png", labels=["a", "b"]),
                 plots.plot_choices(run, tmp_path / "choices.png", k=3),
                 plots.plot_edfs(run, tmp_path / "edfs.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown plot format '.gif'"):
        plots.plot_front(run, tmp_path / "front.gif")
