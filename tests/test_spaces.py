"""Search spaces: shipped members, sampling, exact size, decisions, errors naming file/stage/field."""
import itertools
import random

import pytest
import torch

import nas
from nas.spaces import SearchSpace, SpaceError, load_space, shipped_spaces

SMALL = {
    "name": "small", "stem": [16, 24], "head": 128,
    "defaults": {"block": ["mbconv", "fused_mbconv"], "kernel": [3, 5], "expansion": [1, 4],
                 "se": {"mbconv": 0.25, "fused_mbconv": 0}},
    "stages": [{"channels": 16, "stride": 1, "layers": [1, 2]},
               {"channels": [24, 32], "stride": 2, "layers": {"min": 1, "max": 3}, "kernel": 3, "se": [0, 0.25],
                "block": "mbconv"}],
}


def test_shipped_spaces():
    assert shipped_spaces() == ("efficientnet", "efficientnetv2", "tiny")


@pytest.mark.parametrize("space, member", [("efficientnetv2", "efficientnetv2_s"), ("efficientnet", "efficientnet_b0")])
def test_paper_baselines_are_members(space, member):
    s = load_space(space)
    assert s.contains(nas.baseline(member)) and s.baseline == member
    assert s.from_decisions(s.to_decisions(nas.baseline(member))) == nas.baseline(member)


def test_non_member_names_the_stage():
    assert load_space("efficientnetv2").mismatch(nas.baseline("efficientnet_b0")) == "stage 1: channels 16 not in [24]"
    arch = nas.baseline("efficientnetv2_s").replace_stage(2, kernel=7)
    assert load_space("efficientnetv2").mismatch(arch) == "stage 3: kernel 7 not in [3, 5]"
    with pytest.raises(ValueError, match="stage 3: kernel 7"):
        load_space("efficientnetv2").to_decisions(arch)


def test_size_matches_brute_force_enumeration():
    space = SearchSpace.from_dict(SMALL)
    names = [d.name for d in space.decisions]
    archs = {str(space.from_decisions(dict(zip(names, values))))
             for values in itertools.product(*(d.choices for d in space.decisions))}
    assert space.size == len(archs) == 2 * (2 * 2 * 2 * 2) * (3 * 2 * 2 * 2)
    assert all(space.contains(a) for a in archs)


def test_decision_names():
    names = [d.name for d in SearchSpace.from_dict(SMALL).decisions]
    assert names == ["stem.channels", "stage1.block", "stage1.kernel", "stage1.expansion", "stage1.layers",
                     "stage2.expansion", "stage2.layers", "stage2.channels", "stage2.se"]
    v2 = load_space("efficientnetv2")
    assert "stage3.kernel" in [d.name for d in v2.decisions]
    assert v2.size == (2 * 2 * 3) ** 6 * 3 * 5 * 5 * 5 * 7 * 9


@pytest.mark.parametrize("name", ["tiny", "efficientnet", "efficientnetv2"])
def test_sampling_is_seeded_and_in_space(name):
    space = load_space(name)
    a = [str(space.sample(random.Random(s))) for s in range(10)]
    assert a == [str(space.sample(s)) for s in range(10)]  # int seeds = Random(seed)
    assert len(set(a)) >= 8
    for text in a:
        assert space.contains(text) and str(nas.parse_arch(text)) == text


@pytest.mark.parametrize("name", ["tiny", "efficientnet", "efficientnetv2"])
def test_sampled_archs_train(name):
    space = load_space(name)
    torch.manual_seed(0)
    arch = space.sample(3)
    if name != "tiny":  # keep CPU time small: the same blocks, two layers per stage at most
        arch = nas.Arch(stem=arch.stem, head=arch.head, stages=tuple(s.__class__(**{**s.__dict__, "repeats": min(s.repeats, 2)}) for s in arch.stages))
    model = nas.build_model(arch, num_classes=10)
    y = model(torch.randn(2, 3, 32, 32))
    y.sum().backward()
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_mutate_changes_one_decision():
    space = load_space("efficientnetv2")
    rng = random.Random(1)
    for _ in range(20):
        a = space.sample(rng)
        b = space.mutate(a, rng)
        da, db = space.to_decisions(a), space.to_decisions(b)
        assert sum(da[k] != db[k] for k in da) == 1 and space.contains(b)


def test_baseline_must_be_in_the_space():
    bad = {**SMALL, "baseline": "efficientnet_b0"}
    with pytest.raises(SpaceError, match="baseline: 'efficientnet_b0' is not in the space: stage 2: expansion 6 not in \\[1, 4\\]"):
        SearchSpace.from_dict(bad, source="s.yaml")


HEADER = "name: x\nstem: 32\nhead: 1280\nstages:\n"


@pytest.mark.parametrize("stage, message", [
    ("channels: 24, stride: 1, block: [warpconv], kernel: [3], expansion: [1], layers: [1]",
     "stage 1: block 'warpconv' unknown (choose from mbconv, fused_mbconv)"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [4], expansion: [1], layers: [1]", "stage 1: kernel 4 must be odd"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [0], layers: [1]", "stage 1: expansion 0 must be a number > 0"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: [0]", "stage 1: layers 0 must be >= 1"),
    ("stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: [1]", "stage 1: missing 'channels'"),
    ("channels: 24, stride: 3, block: [mbconv], kernel: [3], expansion: [1], layers: [1]", "stage 1: stride 3 not in [1, 2]"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: [1], colour: red",
     "stage 1: unknown key 'colour'"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: {min: 3, max: 2}",
     "stage 1: layers range min 3 > max 2"),
    # Bounds of the arch string, checked before a range is spelled out.
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: {min: 1, max: 1000000000}",
     "stage 1: layers 1000000000 must be <= 1000"),
    ("channels: 99999, stride: 1, block: [mbconv], kernel: [3], expansion: [1], layers: [1]",
     "stage 1: channels 99999 must be <= 16384"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [33], expansion: [1], layers: [1]",
     "stage 1: kernel 33 must be <= 31"),
    ("channels: 24, stride: 1, block: [mbconv], kernel: [3], expansion: [64], layers: [1]",
     "stage 1: expansion 64 must be <= 32"),
])
def test_bad_stage_fields(tmp_path, stage, message):
    path = tmp_path / "space.yaml"
    path.write_text(HEADER + "  - {" + stage + "}\n")
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert str(err.value).startswith(f"{path}: {message}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ('name: x\nstem: !!python/object/apply:os.system ["echo pwned"]\nstages: []\n', "invalid YAML at line 2"),
    ("- just\n- a list\n", "a search space must be a mapping with name and stages, got a list"),
    ("", "empty file"),
    ("name: x\nstages: [\n", "invalid YAML at line 3"),
    ("name: x\n", "missing 'stages'"),
    ("name: x\nstages: []\ncolour: 1\n", "unknown key 'colour'"),
    ("name: a\nname: b\nstages: []\n", "duplicate key 'name' at line 2 \\(first at line 1\\)"),
    ("name: x\ndescription: [1, 2]\nstages: []\n", "description: must be a string, got a list"),
    ("name: x\nbaseline: {a: 1}\nstages: []\n", "baseline: must be a string, got a dict"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message):
        load_space(str(path))


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(SpaceError, match="no such file"):
        load_space(str(tmp_path / "nope.yaml"))
    with pytest.raises(SpaceError, match="choose from efficientnet, efficientnetv2, tiny"):
        load_space("nope")


def bomb() -> str:
    levels = ['&a ["x","x","x","x","x","x","x","x","x"]']
    levels += [f'&{chr(97 + i)} [' + ",".join([f"*{chr(96 + i)}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join(levels) + "]"


def test_alias_bomb_in_a_field_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\ndescription: " + bomb() + "\nstem: 16\nhead: 64\nstages:\n"
                    "  - {block: mbconv, kernel: 3, expansion: 1, channels: 16, stride: 1, layers: 1}\n")
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert str(err.value) == f"{path}: YAML aliases expand to more than 100,000 extra nodes (line 2); refusing an alias bomb"


def test_directory_and_binary_file(tmp_path):
    with pytest.raises(SpaceError, match=f"^{tmp_path}: is a directory, not a YAML file$"):
        load_space(str(tmp_path))
    path = tmp_path / "space.yaml"
    path.write_bytes(bytes(range(128, 256)) * 10)
    with pytest.raises(SpaceError, match="not UTF-8 text$"):
        load_space(str(path))


def test_long_bad_values_are_clipped(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(HEADER + "  - {channels: 24, stride: 1, block: [" + "w" * 100_000 + "], kernel: [3], "
                    "expansion: [1], layers: [1]}\n")
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert "... (100,000 characters) unknown (choose from mbconv, fused_mbconv)" in str(err.value)
    assert len(str(err.value)) < 300
