"""`nas show`, `nas baselines`, `nas space` as users call them."""
import pytest

from conftest import TINY_ARCH, nas_json, run_nas


def test_show_json():
    d = nas_json("show", "efficientnetv2_s")
    assert (d["params"], d["resolution"]) == (21_458_488, 384)
    assert d["arch"].startswith("stem_k3_s2_c24 fmb_r2_k3_s1_e1_c24 ")
    d = nas_json("show", TINY_ARCH, "--num-classes", "10")
    assert d["resolution"] == 224 and d["arch"] == TINY_ARCH and isinstance(d["macs"], int)


def test_show_table_and_file(tmp_path):
    path = tmp_path / "arch.txt"
    path.write_text(TINY_ARCH + "\n")
    out = run_nas("show", str(path), "--resolution", "32", check=True).stdout
    assert "fused_mbconv" in out and "at 32x32" in out


def test_baselines_json():
    rows = nas_json("baselines")
    assert [r["name"] for r in rows][:2] == ["efficientnet_b0", "efficientnet_b1"]
    assert {r["name"]: r["params"] for r in rows}["efficientnetv2_xl"] == 208_119_808


def test_space_json_and_contains():
    d = nas_json("space", "efficientnetv2")
    assert d["name"] == "efficientnetv2" and "efficientnetv2_s" in d["members"] and d["size"] == 70_543_872_000
    assert run_nas("space", "efficientnetv2", "--contains", "efficientnetv2_s").returncode == 0
    r = run_nas("space", "efficientnetv2", "--contains", "efficientnet_b0")
    assert r.returncode == 1 and "stage 1: channels 16 not in [24]" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["show", "stem_k3_s2_c32 xx_r1_k3_s1_e1_c16 head_c1280"], "unknown block type 'xx'"),
    (["show", "efficientnet_b99"], "unknown baseline 'efficientnet_b99'"),
    (["space", "/no/such/space.yaml"], "no such file"),
])
def test_user_errors_are_one_line(args, message):
    r = run_nas(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
