"""Safe, bounded YAML: plain data only, duplicate keys, alias bombs, size, encoding, nesting."""
import pytest

from nas.yamlio import MAX_ALIAS_NODES, MAX_YAML_BYTES, YamlError, parse_yaml, read_yaml


def billion_laughs(levels: int = 9) -> str:
    """Nine levels of nine aliases, defined inside the value itself (as reliability.sh builds it)."""
    parts = ['&a ["x","x","x","x","x","x","x","x","x"]']
    parts += [f"&{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_plain_data():
    text = "name: x\nstages:\n  - {channels: 16, layers: [1, 2]}\nratio: 0.25\nflag: true\nnothing: null\n"
    assert parse_yaml(text, source="s.yaml") == {"name": "x", "stages": [{"channels": 16, "layers": [1, 2]}],
                                                 "ratio": 0.25, "flag": True, "nothing": None}
    assert parse_yaml("", source="s.yaml") is None


def test_small_aliases_and_merge_keys_are_fine():
    text = "base: &b {kernel: 3, se: 0.25}\nstage:\n  <<: *b\n  kernel: 5\nagain: *b\n"
    assert parse_yaml(text, source="s.yaml") == {"base": {"kernel": 3, "se": 0.25}, "stage": {"kernel": 5, "se": 0.25},
                                                 "again": {"kernel": 3, "se": 0.25}}


@pytest.mark.parametrize("text, message", [
    ("name: a\nname: b\n", "s.yaml: duplicate key 'name' at line 2 (first at line 1)"),
    ("stages:\n  - {kernel: 3, kernel: 5}\n", "s.yaml: duplicate key 'kernel' at line 2 (first at line 2)"),
    ("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n", "s.yaml: duplicate key 'c' at line 5 (first at line 3)"),
    ("description: " + billion_laughs() + "\n",
     f"s.yaml: YAML aliases expand to more than {MAX_ALIAS_NODES:,} extra nodes (line 1); refusing an alias bomb"),
    ("a: &x [1, *x]\n", "s.yaml: recursive YAML alias at line 1"),
    ("a: !!python/object/apply:os.system ['echo pwned']\n",
     "s.yaml: invalid YAML at line 1: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("a: [1, 2\n", "s.yaml: invalid YAML at line 2: did not find expected ',' or ']'"),
    ("--- 1\n--- 2\n", "s.yaml: invalid YAML at line 2: but found another document"),
    ("[" * 5000 + "]" * 5000, "s.yaml: YAML nested too deeply"),
    ("a: \x00\n", "s.yaml: invalid YAML: unacceptable character #x0000: control characters are not allowed in "
                   '"<unicode string>", position 3'),
])
def test_refused_documents_are_one_line(text, message):
    with pytest.raises(YamlError) as err:
        parse_yaml(text, source="s.yaml")
    assert str(err.value) == message


def test_bomb_is_refused_before_construction():
    # Six levels (531,441 leaves) would still be built in a moment; nine would not. Both are refused,
    # from the node graph alone.
    for levels in (6, 9):
        with pytest.raises(YamlError, match="alias bomb"):
            parse_yaml(f"name: {billion_laughs(levels)}\n", source="e.yaml")
    assert len(parse_yaml(f"name: {billion_laughs(4)}\n", source="e.yaml")["name"]) == 4  # 6,561 leaves: fine


def test_long_values_are_clipped_in_messages():
    key = "k" * 1000  # YAML's longest plain key
    with pytest.raises(YamlError) as err:
        parse_yaml(f"{key}: 1\n{key}: 2\n", source="s.yaml")
    assert str(err.value) == f"s.yaml: duplicate key '{'k' * 99}... (1,000 characters) at line 2 (first at line 1)"
    with pytest.raises(YamlError) as err:
        parse_yaml("a: " + "1" * 5000 + "\n", source="s.yaml")
    assert str(err.value).startswith("s.yaml: invalid YAML value: Exceeds the limit") and len(str(err.value)) < 200


def test_read_yaml_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: x\n")  # a byte-order mark is not content
    assert read_yaml(path) == {"name": "x"}


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x80\x81\xfe" * 1000), "not UTF-8 text"),
    (lambda p: p.write_bytes(b"a: 1\n" + b"#" * MAX_YAML_BYTES), "larger than 4 MB; not read"),
    (lambda p: p.mkdir(), "is a directory, not a YAML file"),
    (lambda p: None, "no such file"),
])
def test_unreadable_files_are_one_line(tmp_path, make, message):
    path = tmp_path / "s.yaml"
    make(path)
    with pytest.raises(YamlError) as err:
        read_yaml(path)
    assert str(err.value) == f"{path}: {message}"


def test_is_a_value_error():
    assert issubclass(YamlError, ValueError)


def test_without_libyaml_the_same_rules_hold(monkeypatch):
    import sys

    from nas import yamlio

    monkeypatch.setitem(sys.modules, "yaml.cyaml", None)  # as in a PyYAML built without libyaml
    yamlio._loader_class.cache_clear()
    try:
        assert "CParser" not in [c.__name__ for c in yamlio._loader_class().__mro__]
        assert parse_yaml("a: &x [1]\nb: *x\n", source="s.yaml") == {"a": [1], "b": [1]}
        for text, message in [("name: a\nname: b\n", "duplicate key 'name'"), ("[" * 5000, "nested too deeply"),
                              ("a: \x00\n", "special characters are not allowed"),
                              ("d: " + billion_laughs() + "\n", "alias bomb")]:
            with pytest.raises(YamlError, match=message):
                parse_yaml(text, source="s.yaml")
    finally:
        yamlio._loader_class.cache_clear()
