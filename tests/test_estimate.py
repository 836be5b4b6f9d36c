"""`nas estimate`: the arithmetic on a fake step-time table, the backends' parallelism, the pruner, errors."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from conftest import run_nas

STEPS, PASSES = 1438 // 32, 359 / 32  # digits after the minival split; batch 32 (the ragged batch dropped)


def step_time(s: float, *, cached: bool = False, busy: bool = False):
    from nas.measure import StepTime

    return StepTime(step_time=s, step_time_p10=s, step_time_p90=s, device="cpu-test", batch=32, resolution=16,
                    repeats=max(15, math.ceil(3.0 / s)), inference_latency=s / 3, peak_memory=None, exclusive=True,
                    cached=cached, busy=busy)


def calibration(**changes):
    from nas.estimate import Calibration

    fields = dict(train_images=1438, val_images=359, num_classes=10, reference=step_time(0.02), startup_seconds=3.0,
                  study_seconds=0.5, ledger_seconds=0.1, trial_seconds=0.4, epoch_factor=1.25)
    return Calibration(**{**fields, **changes})


def experiment(**changes):
    from nas.experiment import from_dict

    return from_dict({"name": "est", "space": "tiny", "dataset": "digits", "controller": "random", "trials": 8,
                      "proxy": {"epochs": 3, "resolution": 16, "batch_size": 32}, "seed": 0, **changes})


class FakeTable:
    """Measured S by call order: 10 ms, 20 ms, ... (the archs it was asked about are kept)."""

    def __init__(self):
        self.archs, self.values = [], (0.01 * k for k in itertools.count(1))

    def __call__(self, arch):
        self.archs.append(arch)
        return step_time(next(self.values))


def by_hand_measure(s: float) -> float:
    """measure_step_time's defaults: warm-up >= 3 steps and 0.75 s, >= 3 s timed, inference warm 2 + >= 1 s."""
    timed = step_time(s).repeats * s
    return max(3 * s, 0.75) + max(timed, 3.0) + 2 * s / 3 + max(15 * s / 3, 1.0)


def by_hand_trial(s: float, *, measured: bool = True, epochs: float = 3) -> float:
    epoch = 1.25 * (STEPS * s + PASSES * s / 3)
    return 0.1 + 0.4 + (by_hand_measure(s) if measured else 0.0) + epochs * epoch


def run_estimate(exp=None, *, sample=8, cal=None, cores=2, gpus=0):
    from nas.estimate import estimate
    from nas.runtime import RuntimeOptions

    table = FakeTable()
    result = estimate(exp or experiment(), RuntimeOptions(), sample=sample, measure=table, calibration=cal or
                      calibration(), cores=cores, gpus=gpus, log=lambda message: None)
    return result, table


def test_measure_seconds_follow_the_measurement_protocol():
    from nas.estimate import measure_seconds

    assert measure_seconds(step_time(0.01)) == pytest.approx(0.75 + 3.0 + 2 * 0.01 / 3 + 1.0)
    slow = step_time(0.5)  # 15 steps of 0.5 s outlast every window
    assert measure_seconds(slow) == pytest.approx(1.5 + 7.5 + 2 * 0.5 / 3 + 15 * 0.5 / 3)


def test_a_local_search_on_a_fake_table():
    result, table = run_estimate()
    assert result.sampled == 8 and len(table.archs) == 8 and len({str(a) for a in table.archs}) == 8
    assert str(experiment().reference_arch) not in {str(a) for a in table.archs}
    trials = np.array([by_hand_trial(0.01 * k) for k in range(1, 9)])
    assert result.trial_seconds == pytest.approx(np.median(trials))
    assert result.trial_seconds_p10 == pytest.approx(np.percentile(trials, 10))
    assert result.trial_seconds_p90 == pytest.approx(np.percentile(trials, 90))
    baseline = by_hand_trial(0.02, measured=False)  # it reuses S0, measured at the start
    device = baseline + 7 * trials.mean()
    s0 = by_hand_measure(0.02)
    assert result.device_hours == pytest.approx((device + s0) / 3600)
    assert result.one_off_seconds == pytest.approx(3.0 + 0.5 + s0)  # start-up, the study, S0
    assert result.wall_seconds == pytest.approx(3.5 + s0 + device)
    assert (result.parallel, result.steps_per_epoch, result.epochs, result.expected_epochs) == (1, STEPS, 3, 3)
    data = result.to_dict()
    assert {"trial_seconds", "trial_seconds_p10", "trial_seconds_p90", "device_hours", "wall_seconds",
            "sampled"} <= set(data)
    assert json.loads(json.dumps(data)) == data
    assert "measured afresh" in " ".join(result.notes)


def test_cached_step_times_are_timed_at_the_load_of_now():
    # the cache was filled while the device ran 4x slower: its S say how the candidates compare,
    # the reference measured now says how fast the device is
    from nas.estimate import estimate
    from nas.runtime import RuntimeOptions

    def cached_at_4x(arch):
        return step_time(0.04, cached=True)

    def run(**changes):
        return estimate(experiment(), RuntimeOptions(), sample=4, measure=cached_at_4x,
                        calibration=calibration(**changes), cores=2, gpus=0, log=lambda message: None)

    stale = run(load_ratio=0.25, stale_cache=True, cached_share=1.0)
    assert stale.step_time == pytest.approx(0.01)
    # the search drops the stale entries: its candidates are measured, and trained at the S of now
    assert stale.trial_seconds == pytest.approx(by_hand_trial(0.01), rel=1e-9) and stale.cached_share == 0
    assert any("another load of this device" in note and "every S afresh" in note for note in stale.notes)
    close = run(load_ratio=1.1, cached_share=1.0)  # within the tolerance: the cache is kept, timed at now
    assert close.step_time == pytest.approx(0.044) and close.cached_share == 1.0
    assert close.trial_seconds == pytest.approx(by_hand_trial(0.044, measured=False), rel=1e-9)
    assert any("1.10x what the cache holds" in note for note in close.notes)


def test_a_search_opens_with_a_first_order_estimate_from_s0(monkeypatch):
    import os

    from nas.estimate import first_order

    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    trial = by_hand_measure(0.02) + 3 * (STEPS * 0.02 + PASSES * 0.02 / 3)  # no overheads: a first figure
    line = first_order(experiment(), step_time(0.02), 1438, 359)
    minutes, seconds = divmod(math.ceil(8 * trial), 60)
    assert line.startswith(f"estimate: about {minutes}m{seconds:02d}s for 8 trials, {trial:.1f} s a trial")
    assert f"3 epochs of {STEPS} steps at 20.00 ms" in line
    two = first_order(experiment(workers=2, trials=80), step_time(0.02), 1438, 359)  # 2 at once
    minutes, seconds = divmod(math.ceil(40 * trial), 60)
    assert f"about {minutes}m{seconds:02d}s for 80 trials" in two


def test_sample_is_seeded_and_bounded_by_the_space():
    first, a = run_estimate(sample=3)
    again, b = run_estimate(sample=3)
    assert [str(x) for x in a.archs] == [str(x) for x in b.archs] and first == again
    other, c = run_estimate(experiment(seed=1), sample=3)
    assert [str(x) for x in c.archs] != [str(x) for x in a.archs]


def test_a_rerun_of_the_same_search_finds_its_candidates_cached():
    fresh, _ = run_estimate()
    cached, _ = run_estimate(cal=calibration(cached_share=1.0))
    assert cached.measure_seconds == 0 and fresh.measure_seconds > 0
    trials = np.array([by_hand_trial(0.01 * k, measured=False) for k in range(1, 9)])
    assert cached.trial_seconds == pytest.approx(np.median(trials))
    assert "ran here before" in " ".join(cached.notes)
    half, _ = run_estimate(cal=calibration(cached_share=0.5))
    assert half.wall_seconds == pytest.approx((fresh.wall_seconds + cached.wall_seconds) / 2)


def test_s0_is_measured_once_at_the_start_and_the_baseline_reuses_it():
    from nas.estimate import measure_seconds

    once = measure_seconds(step_time(0.02))
    at_start, _ = run_estimate()
    in_trial, _ = run_estimate(cal=calibration(reference_at_start=False))  # a reward without S0
    assert at_start.one_off_seconds == pytest.approx(in_trial.one_off_seconds + once)
    assert at_start.wall_seconds == pytest.approx(in_trial.wall_seconds)  # measured once either way


def test_the_pruner_schedule_and_its_saving():
    from nas.estimate import expected_epochs

    assert expected_epochs("none", 3, 8) == 3
    # mo_asha at 9 epochs: rungs 1 and 3, 1/3 go on, the first 2 at a rung always
    third = 1 + 2 / 3 + 6 / 9
    assert expected_epochs("mo_asha", 9, 3) == pytest.approx((9 + 9 + third) / 3)
    assert expected_epochs("successive_halving", 1, 10) == 1  # no rung before the last epoch
    assert 1 < expected_epochs("median", 3, 20) < 3
    plain, _ = run_estimate(experiment(proxy={"epochs": 9, "resolution": 16, "batch_size": 32}))
    pruned, _ = run_estimate(experiment(proxy={"epochs": 9, "resolution": 16, "batch_size": 32}, pruner="mo_asha"))
    assert pruned.expected_epochs == pytest.approx(expected_epochs("mo_asha", 9, 8))
    assert pruned.wall_seconds == pytest.approx(plain.wall_seconds - pruned.pruner_saving_seconds)
    assert pruned.pruner_saving_seconds > 0 and "mo_asha" in " ".join(pruned.notes)


def test_local_workers_are_capped_at_the_cores_and_share_the_device():
    one, _ = run_estimate()
    four, _ = run_estimate(experiment(workers=4), cores=2)
    assert four.parallel == 2
    assert four.one_off_seconds == pytest.approx(one.one_off_seconds + 3.0)  # the workers' own start-up
    assert four.wall_seconds == pytest.approx(one.wall_seconds + 3.0)  # one CPU: no faster, only overlapped
    assert "share this device" in " ".join(four.notes)


def test_ray_runs_max_concurrent_trials_on_the_gpus_there_are():
    ray = {"max_concurrent": 4, "gpus_per_trial": 0.5}
    one, _ = run_estimate()
    result, _ = run_estimate(experiment(backend="ray", ray=ray), gpus=1)
    assert result.parallel == 2  # one GPU holds two half-GPU trials
    assert result.device_hours == pytest.approx(one.device_hours * 0.5)
    trials = one.device_hours * 3600 - by_hand_measure(0.02)  # S0 is measured once, before the trials
    assert result.wall_seconds == pytest.approx(one.one_off_seconds + trials / 2)
    with pytest.raises(ValueError, match="needs a GPU"):
        run_estimate(experiment(backend="ray", ray=ray), gpus=0)


def test_the_simulated_backend_is_on_its_virtual_clock():
    from nas.estimate import estimate
    from nas.runtime import RuntimeOptions

    def never(arch):
        raise AssertionError("the simulated backend measures nothing")

    exp = experiment(backend="simulated", simulated={"workers": 4}, trials=40)
    result = estimate(exp, RuntimeOptions(), sample=5, measure=never, log=lambda m: None)
    assert result.virtual and result.parallel == 4 and result.sampled == 5
    assert result.wall_seconds == pytest.approx(result.device_hours * 3600 / 4)  # 40 trials, 4 at once
    assert result.trial_seconds > 0 and result.one_off_seconds == 0


def test_infeasible_candidates_are_counted_apart():
    from nas.cost import model_cost

    _, table = run_estimate()
    params = sorted(model_cost(a, 16, 10).params for a in table.archs)
    bound = (params[3] + params[4]) / 2  # half the sample breaks it
    result, _ = run_estimate(experiment(constraints={"params": bound}))
    assert result.infeasible_share == pytest.approx(0.5)
    with pytest.raises(ValueError, match="break the constraints"):
        run_estimate(experiment(constraints={"params": params[0] / 2}))


def test_bad_sample_is_refused():
    with pytest.raises(ValueError, match="sample must be a whole number >= 1"):
        run_estimate(sample=0)


@pytest.fixture
def experiment_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: est\nspace: tiny\ndataset: digits\ncontroller: random\ntrials: 3\nseed: 0\n"
                    "proxy: {epochs: 1, resolution: 8, batch_size: 32}\n")
    return path


def test_cli_estimates_for_real(experiment_file):
    proc = run_nas("estimate", str(experiment_file), "trials=4", "--sample", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sampled"] == 1 and data["trials"] == 4
    assert 0 < data["trial_seconds_p10"] <= data["trial_seconds"] <= data["trial_seconds_p90"]
    assert data["wall_seconds"] > data["trial_seconds"] and data["device_hours"] > 0
    assert "S of sampled architecture 1/1" in proc.stderr
    text = run_nas("estimate", str(experiment_file), "backend=simulated")
    assert text.returncode == 0 and "(virtual)" in text.stdout.splitlines()[-1]


@pytest.mark.parametrize("args, word", [
    (["no-such.yaml"], "no-such.yaml"),
    (["{exp}", "trials=0"], "trials"),
    (["{exp}", "--sample", "0"], "sample"),
    (["{exp}", "proxy.resolution=4"], "resolution"),
])
def test_cli_bad_input_is_one_line(experiment_file, args, word):
    proc = run_nas("estimate", *[a.format(exp=experiment_file) for a in args])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and word in proc.stderr
