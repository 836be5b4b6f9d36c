"""Experiment files read once into typed, frozen objects: overrides, paths, bounds, what travels."""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

import nas
from nas.constraints import Bound
from nas.experiment import ExperimentError, from_dict, load_experiment

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "quickstart.yaml"


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_experiment_is_valid(path, tmp_path):
    text = path.read_text()
    overrides = [f"data_dir={tmp_path}"] if "data_dir:" in text else []  # its data lives on the user's disk
    exp = load_experiment(path, overrides)
    assert exp.name == path.stem and exp.trials <= exp.space.size
    assert exp.reference_arch is not None and exp.space.contains(exp.reference_arch)


def test_overrides_read_numbers_as_numbers():
    exp = load_experiment(QUICK, ["proxy.lr=1e-3", "proxy.epochs=2", "seed=7", "constraints.step_time=1.2x",
                                  "constraints.params=6e4", "controller.population_size=6"])
    assert exp.proxy.lr == 0.001 and exp.proxy.epochs == 2 and exp.seed == 7 and exp.proxy.seed == 7
    assert exp.constraints.step_time == Bound(1.2, relative=True) and exp.constraints.params == Bound(60000.0)
    assert dict(exp.controller.options)["population_size"] == 6


def test_numbers_written_as_1e_3_in_a_file_are_numbers(tmp_path):
    (tmp_path / "exp.yaml").write_text("name: x\nspace: tiny\nproxy: {lr: 1e-3, weight_decay: 5e-5}\n")
    exp = load_experiment(tmp_path / "exp.yaml")
    assert exp.proxy.lr == 0.001 and exp.proxy.weight_decay == 5e-5


def test_paths_in_a_file_are_relative_to_it_and_overrides_to_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "proj" / "shapes").mkdir(parents=True)
    (tmp_path / "proj" / "exp.yaml").write_text("name: x\nspace: tiny\ndataset: imagefolder\ndata_dir: shapes\n")
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(tmp_path / "proj" / "exp.yaml")
    assert exp.data.data_dir == str((tmp_path / "proj" / "shapes").resolve())
    (tmp_path / "other").mkdir()
    exp = load_experiment(tmp_path / "proj" / "exp.yaml", ["data_dir=other"])
    assert exp.data.data_dir == str((tmp_path / "other").resolve())


def test_the_experiment_travels_as_one_small_object():
    exp = load_experiment(QUICK)
    copy = pickle.loads(pickle.dumps(exp))
    assert copy == exp and len(pickle.dumps(exp)) < 20_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.trials = 3  # type: ignore[misc]
    assert isinstance(exp.space, nas.SearchSpace) and exp.space.name == "tiny"


def test_what_a_run_records_reads_back_as_the_same_experiment():
    exp = load_experiment(QUICK, ["constraints.macs=4e8", "pruner=mo_asha", "proxy.lr=0.05"])
    again = from_dict(exp.to_dict(), source="config.yaml")
    assert again == exp and again.identity() == exp.identity()


@pytest.mark.parametrize("override, message", [
    ("constraints.colour=3", "constraints.colour: unknown quantity (constrain params, macs, step_time)"),
    ("constraints.params=-1", "constraints.params: -1 must be a positive number"),
    ("simulated.evaluator=table", "simulated.table: the table evaluator needs a CSV file"),
    ("ray.scheduler=fifo", "ray.scheduler: 'fifo' not in ['none', 'asha']"),
    ("backend=cloud", "backend: 'cloud' not in ['local', 'ray', 'simulated']"),
    ("proxy.resolution=1", "resolution"),
    ("storage=redis://x", "storage: 'redis://x': use sqlite:///PATH"),
])
def test_bad_fields_name_themselves(override, message):
    with pytest.raises(ExperimentError) as err:
        load_experiment(QUICK, [override])
    assert str(err.value).startswith(f"{QUICK}: ") and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1
