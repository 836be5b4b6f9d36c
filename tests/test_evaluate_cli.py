"""`nas evaluate` and `nas measure` as users call them."""
import json

import pytest

import nas
from conftest import TINY_ARCH, nas_json, run_nas


def test_evaluate_one_candidate_on_digits():
    d = nas_json("evaluate", TINY_ARCH, "--dataset", "digits", "--epochs", "2", "--resolution", "16", "--batch", "64")
    assert d["state"] == "COMPLETE" and d["reason"] is None
    assert d["accuracy"] > 0.5 and len(d["epoch_accuracies"]) == 2 and d["accuracy"] == d["epoch_accuracies"][-1]
    assert d["params"] == nas.count_params(nas.parse_arch(TINY_ARCH), num_classes=10)
    assert d["macs"] == nas.count_macs(nas.parse_arch(TINY_ARCH), 16, num_classes=10)
    assert d["step_time_p10"] <= d["step_time"] <= d["step_time_p90"]
    assert d["reward"] == pytest.approx(d["accuracy"])  # without --reference the arch is its own reference


def test_evaluate_with_a_reference():
    ref = "stem_k3_s1_c16 fmb_r1_k3_s1_e1_c16 mb_r1_k3_s2_e4_c32_se0.25 head_c128"
    d = nas_json("evaluate", TINY_ARCH, "--epochs", "1", "--resolution", "8", "--reference", ref)
    p0 = nas.count_params(nas.parse_arch(ref), num_classes=10)
    # P > P0 pulls the reward below A; S0 comes from the same device
    assert d["state"] == "COMPLETE" and d["params"] > p0 and d["reward"] != pytest.approx(d["accuracy"])


def test_divergence_is_a_failed_candidate_not_a_crash():
    d = nas_json("evaluate", TINY_ARCH, "--epochs", "1", "--resolution", "8", "--lr", "1e6")
    assert d["state"] == "FAIL" and d["reason"].startswith("diverged") and d["reward"] is None
    assert d["params"] > 0  # what could be known is still reported


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "cifar10: no data in /no/such/folder"),
    (["--dataset", "no_such_dataset"], "unknown dataset 'no_such_dataset'"),
])
def test_data_errors_are_one_line(args, message):
    r = run_nas("evaluate", TINY_ARCH, "--epochs", "1", "--resolution", "8", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_corrupt_cifar_batch_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(bytes(range(256)) * 4)
    r = run_nas("evaluate", TINY_ARCH, "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "data_batch_1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_measure_and_its_cache():
    args = ("measure", TINY_ARCH, "--batch", "8", "--resolution", "16", "--num-classes", "10")
    first = nas_json(*args)
    assert first["step_time_p10"] <= first["step_time"] <= first["step_time_p90"]
    assert first["device"].startswith("cpu") and "torch" in first["device"] and not first["cached"]
    second = nas_json(*args)
    assert second["cached"] and second["step_time"] == first["step_time"]
    fresh = nas_json(*args, "--no-cache")
    assert not fresh["cached"]


def test_data_prepare_then_evaluate_from_the_prepared_folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "train" / cls / f"{i}.png")
    run_nas("data", "prepare", str(tmp_path / "imgs"), str(tmp_path / "small"), "--resolution", "12", check=True)
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert manifest["images"] == {"train": 7, "minival": 1} and manifest["classes"] == ["cat", "dog"]
    d = nas_json("evaluate", "stem_k3_s1_c8 mb_r1_k3_s2_e1_c16 head_c32", "--dataset", "prepared", "--data-dir",
                 str(tmp_path / "small"), "--epochs", "1", "--resolution", "12", "--batch", "4")
    assert d["state"] == "COMPLETE" and d["params"] == nas.count_params(nas.parse_arch("stem_k3_s1_c8 mb_r1_k3_s2_e1_c16 head_c32"), num_classes=2)
