"""`nas export` and `nas train`: ONNX, TorchScript and state_dict files checked by their runtimes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_nas





@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    """A copy of the run that a test may damage (its storage is the copy's own study.db)."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def best_number(run: Path) -> int:
    from nas import analysis

    return int(analysis.top_trials(run, 1)["number"].iloc[0])


class Evil:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.makedirs, (str(self.marker),)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_onnx_and_torchscript_agree_with_the_eager_model(run, tmp_path):
    import onnxruntime as ort

    from nas.export import export_trial, load_exported, trial_model

    eager, info = trial_model(run, "best")
    assert info.trained and info.number == best_number(run) and info.resolution == 8 and info.num_classes == 10
    onnx_file = export_trial(run, "best", "onnx", tmp_path / "best.onnx")
    ts_file = export_trial(run, "best", "torchscript", tmp_path / "best.pt")
    session = ort.InferenceSession(onnx_file.path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    assert inp.shape[1:] == [3, 8, 8] and not isinstance(inp.shape[0], int)  # a dynamic batch axis
    scripted = torch.jit.load(ts_file.path).eval()
    for batch in (2, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        with torch.no_grad():
            want = eager(torch.from_numpy(x)).numpy()
            got_ts = scripted(torch.from_numpy(x)).numpy()
        got_onnx = session.run(None, {inp.name: x})[0]
        assert got_onnx.shape == want.shape == (batch, 10)
        np.testing.assert_allclose(got_ts, want, atol=1e-5)
        np.testing.assert_allclose(got_onnx, got_ts, atol=1e-4)
    # both come back through load_exported, knowing their arch
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        for path in (onnx_file.path, ts_file.path):
            module = load_exported(path)
            assert module.arch == info.arch
            np.testing.assert_allclose(module(x).numpy(), eager(x).numpy(), atol=1e-4)


def test_state_dict_round_trip(run, tmp_path):
    from nas.export import load_exported, trial_model

    out = tmp_path / "best.pt"
    proc = run_nas("export", str(run), "--trial", "best", "--format", "state_dict", "--out", str(out), "--json",
                   check=True)
    info = json.loads(proc.stdout)
    assert info["trained"] is True and info["number"] == best_number(run) and "note" not in proc.stderr
    saved = torch.load(out, weights_only=True)
    assert saved["arch"] == info["arch"] and saved["num_classes"] == 10 and saved["resolution"] == 8
    model = load_exported(out)
    eager, _ = trial_model(run, info["number"])
    assert str(model.arch) == info["arch"] and not model.training
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), eager(x))


def test_untrained_export_is_seeded_and_says_so(run_copy, tmp_path):
    from nas import analysis
    from nas.builder import build_model
    from nas.export import load_exported

    frame = analysis.trials_frame(run_copy)
    row = frame[frame["duplicate_of"].isna() & (frame["state"] == "COMPLETE")].iloc[-1]
    number = int(row["number"])
    (run_copy / "weights" / f"trial_{number}.pt").unlink()
    out = tmp_path / "init.pt"
    refused = run_nas("export", str(run_copy), "--trial", str(number), "--format", "state_dict", "--out", str(out))
    assert refused.returncode == 2 and "kept no trained weights" in refused.stderr and "--untrained" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not out.exists()
    proc = run_nas("export", str(run_copy), "--trial", str(number), "--format", "state_dict", "--out", str(out),
                   "--untrained", check=True)
    assert f"untrained initial weights (seed {int(row['seed'])})" in proc.stdout
    torch.manual_seed(int(row["seed"]))
    expected = build_model(row["arch"], num_classes=10).state_dict()
    got = load_exported(out).state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert torch.load(out, weights_only=True)["trained"] is False


def test_unsafe_pickle_is_refused(run_copy, tmp_path):
    from nas.export import load_exported

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"arch": "x", "state_dict": {}, "payload": Evil(marker)}, evil)
    with pytest.raises(ValueError, match="refused to load") as err:
        load_exported(evil)
    assert "\n" not in str(err.value) and not marker.exists()
    # the same file planted as a run's kept weights: the CLI refuses in one line
    number = best_number(run_copy)
    shutil.copy(evil, run_copy / "weights" / f"trial_{number}.pt")
    proc = run_nas("export", str(run_copy), "--trial", str(number), "--format", "state_dict",
                   "--out", str(tmp_path / "x.pt"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and not marker.exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and "refused to load" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--trial", "99999", "--format", "onnx"], "has no trial 99999"),
    (["--trial", "seven", "--format", "onnx"], "trial must be a number or 'best'"),
])
def test_bad_trial_is_one_line(run, tmp_path, args, message):
    proc = run_nas("export", str(run), *args, "--out", str(tmp_path / "x.onnx"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_export_of_a_missing_run_is_one_line(tmp_path):
    proc = run_nas("export", str(tmp_path / "nope"), "--format", "state_dict", "--out", str(tmp_path / "x.pt"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not a run directory" in proc.stderr


def test_train_the_best_found_network_longer(run, tmp_path):
    from nas import analysis
    from nas.export import load_exported

    out = tmp_path / "final.pt"
    data = json.loads(run_nas("train", str(run), "--trial", "best", "--epochs", "1", "--resolution", "8",
                              "--out", str(out), "--json", check=True).stdout)
    assert data["arch"] == analysis.top_trials(run, 1)["arch"].iloc[0]
    assert data["dataset"] == "digits" and data["split"] == "final" and 0.0 <= data["accuracy"] <= 1.0
    assert len(data["epoch_accuracies"]) == 1 and data["params"] > 0 and data["out"] == str(out)
    saved = torch.load(out, weights_only=True)
    assert saved["trained"] is True and saved["epochs"] == 1 and saved["accuracy"] == data["accuracy"]
    assert str(load_exported(out).arch) == data["arch"]
