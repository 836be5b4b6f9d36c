"""`nas show`, `nas scale`, `nas baselines`, `nas space` as users call them."""
import json

import pytest

from conftest import TINY_ARCH, nas_json, run_nas
from nas.cli import main


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


def test_space_without_argument_lists_the_shipped_spaces():
    rows = nas_json("space")
    assert [(r["name"], r["baseline"]) for r in rows][:2] == [("efficientnet", "efficientnet_b0"),
                                                               ("efficientnetv2", "efficientnetv2_s")]
    assert {r["name"]: r["size"] for r in rows}["efficientnetv2"] == 70_543_872_000
    out = run_nas("space", check=True).stdout
    assert "efficientnetv2      70,543,872,000  efficientnetv2_s" in out


def in_process_json(capsys, *args: str):
    """``nas ARGS --json`` through the same main() the command runs, without an interpreter start."""
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("n, width, depth, resolution", [(1, "1.0", "1.1", "240"), (3, "1.2", "1.4", "300"),
                                                         (7, "2.0", "3.1", "600")])
def test_scale_b0_gives_the_b_series(n, width, depth, resolution, capsys):
    d = in_process_json(capsys, "scale", "efficientnet_b0", "--width", width, "--depth", depth,
                        "--resolution", resolution)
    shown = in_process_json(capsys, "show", f"efficientnet_b{n}")
    assert (d["arch"], d["params"], d["macs"], d["resolution"]) == \
           (shown["arch"], shown["params"], shown["macs"], shown["resolution"])


def test_scale_by_phi(tmp_path, capsys):
    d = in_process_json(capsys, "scale", "efficientnet_b0", "--phi", "2", "--max-resolution", "280")
    assert (d["width"], d["depth"], d["resolution"], d["family"]) == (pytest.approx(1.21), pytest.approx(1.44), 280,
                                                                      "efficientnet")
    path = tmp_path / "arch.txt"
    path.write_text(TINY_ARCH)
    d = in_process_json(capsys, "scale", str(path), "--phi", "1", "--base-resolution", "32", "--num-classes", "10")
    assert d["family"] == "efficientnetv2" and d["resolution"] == 40  # 32 x 1.15 = 36.8 -> 40
    assert d["arch"] == "stem_k3_s1_c16 fmb_r2_k3_s1_e1_c16 fmb_r3_k3_s2_e4_c32 mb_r3_k3_s2_e4_c72_se0.25 head_c280"
    out = run_nas("scale", "efficientnet_b0", "--phi", "1", check=True).stdout.splitlines()
    assert out[0] == in_process_json(capsys, "scale", "efficientnet_b0", "--phi", "1")["arch"]
    assert out[1].startswith("params 9,109,994  MACs ") and "at 256x256" in out[1]


@pytest.mark.parametrize("args, message", [
    (["show", "stem_k3_s2_c32 xx_r1_k3_s1_e1_c16 head_c1280"], "unknown block type 'xx'"),
    (["show", "efficientnet_b99"], "unknown baseline 'efficientnet_b99'"),
    (["show", "mb_r100000_k3_s1_e1_c16"], "'mb_r100000_k3_s1_e1_c16': repeats must be in [1, 1000], got 100000"),
    (["show", "efficientnet_b0", "--resolution", "0"], "--resolution must be in [1, 8192] pixels, got 0"),
    (["show", "efficientnet_b0", "--num-classes", "0"], "--num-classes must be >= 1, got 0"),
    (["show", "efficientnet_b0", "--num-classes", "-5"], "--num-classes must be >= 1, got -5"),
    (["space", "/no/such/space.yaml"], "no such file"),
    (["space", "--contains", "efficientnet_b0"], "--contains needs a SPACE: nas space SPACE --contains ARCH"),
    (["scale", "efficientnet_b0", "--width", "0"], "width must be a finite number > 0, got 0"),
    (["scale", "efficientnet_b0", "--phi", "-1"], "phi must be a finite number >= 0, got -1"),
    (["scale", "efficientnet_b0", "--phi", "1", "--width", "1.1"],
     "give either --phi or --width/--depth/--resolution, not both (got --phi and --width)"),
    (["scale", "efficientnet_b0"], "give --phi N, or --width W --depth D --resolution R"),
    (["scale", "efficientnet_b0", "--width", "1.1", "--gamma", "1.2"], "--gamma can only be used with --phi"),
    (["scale", "efficientnet_b0", "--phi", "60"], "scaling by phi 60 leaves the architecture bounds"),
])
def test_user_errors_are_one_line(args, message, capsys):
    # In-process (the same main() the command runs), so each case costs no interpreter start.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas {args[0]}: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_user_error_from_the_command_line():
    r = run_nas("show", "mb_r100000_k3_s1_e1_c16")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "nas show: error: 'mb_r100000_k3_s1_e1_c16': repeats must be in [1, 1000], got 100000\n"


def test_bad_files_are_one_short_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("q" * 1_000_000)
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\nstem: 16\nhead: 64\nstages:\n"
                   "  - {block: mbconv, kernel: 3, expansion: 1, channels: 16, stride: 1, layers: 1}\n")
    for args, message in [
        (["show", str(garbage)], f"{garbage}: architecture string of 1,000,000 characters is too long"),
        (["show", str(tmp_path)], f"{tmp_path}: is a directory, not an arch file"),
        (["space", str(tmp_path)], f"{tmp_path}: is a directory, not a YAML file"),
        (["space", str(dup)], f"{dup}: duplicate key 'name' at line 2 (first at line 1)"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err) < 400, (args, err[:500])
