"""Reading user YAML safely and within bounds: the one YAML reader of the project.

Search spaces, experiment files and run configs are written by users and may be wrong
or hostile. Every one of them is read by :func:`read_yaml` (a file) or :func:`parse_yaml`
(text), which:

- construct plain data only (PyYAML's safe constructor: no Python tags);
- refuse duplicate keys in a mapping (PyYAML keeps the last one silently), naming the
  key and its line;
- refuse a document whose aliases would expand it by more than ``MAX_ALIAS_NODES``
  nodes (a "billion laughs" bomb), counted on the composed node graph *before* any
  object is built, and a recursive alias;
- read at most ``MAX_YAML_BYTES`` of a file, which must be UTF-8 text, and refuse
  nesting deeper than Python's recursion allows;
- report each problem as one :class:`YamlError` line naming the source, echoing at most
  ~100 characters of the offending text.

libyaml's C scanner and parser are used when PyYAML has them (several times faster), but
never its C composer: that one recurses in C and crashes the process on deeply nested
input, where PyYAML's Python composer raises ``RecursionError``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from nas._echo import clip, echo

__all__ = ["MAX_ALIAS_NODES", "MAX_YAML_BYTES", "YamlError", "parse_yaml", "read_yaml"]

#: Bytes of a YAML file read at most (experiment and space files are a few KB).
MAX_YAML_BYTES = 4 * 1024 * 1024
#: Nodes that aliases may add to a document when expanded (merge keys of a few defaults
#: add tens; nine levels of nine aliases add 387 million).
MAX_ALIAS_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    """A YAML source cannot be used; the message is one line naming the source."""


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The data of a YAML file, read safely and within bounds (see the module doc).

    Args:
        path: the file.

    Returns:
        Plain data (dicts, lists, strings, numbers, booleans, None, dates); None for an
        empty file.

    Raises:
        YamlError: one line naming the file: no such file, a directory, too large, not
            UTF-8 text, invalid YAML, a duplicate key, an alias bomb.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise YamlError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise YamlError(f"{path}: is a directory, not a YAML file") from None
    except OSError as err:
        raise YamlError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_YAML_BYTES:
        raise YamlError(f"{path}: larger than {MAX_YAML_BYTES // 1024 ** 2} MB; not read")
    try:
        text = data.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is not content
    except UnicodeDecodeError:
        raise YamlError(f"{path}: not UTF-8 text") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, *, source: str) -> Any:
    """The data of YAML ``text``, parsed safely and within bounds (see the module doc).

    Args:
        text: one YAML document.
        source: what to call the text in messages (a file name, ``"<override x=1>"``).

    Raises:
        YamlError: one line naming ``source``.
    """
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: larger than {MAX_YAML_BYTES // 1024 ** 2} MB; not read")
    with _one_line_errors(source):
        loader = _loader_class()(text)  # the pure-Python reader checks the characters here
    try:
        with _one_line_errors(source):
            node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node, source)
        with _one_line_errors(source):
            return loader.construct_document(node)
    finally:
        loader.dispose()


@contextlib.contextmanager
def _one_line_errors(source: str) -> Iterator[None]:
    """PyYAML's errors (and what its constructors raise) as one :class:`YamlError` line."""
    import yaml

    try:
        yield
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = err.problem or err.context or "malformed"
        raise YamlError(f"{source}: invalid YAML{where}: {_one_line(problem)}") from None
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: invalid YAML: {_one_line(err)}") from None
    except RecursionError:
        raise YamlError(f"{source}: YAML nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as err:
        # A value the safe constructor cannot make, e.g. an int of 5,000 digits.
        raise YamlError(f"{source}: invalid YAML value: {_one_line(err)}") from None


def _one_line(problem: object) -> str:
    return clip(" ".join(str(problem).split()))


@cache
def _loader_class() -> type:
    """A safe loader that composes in Python (see the module doc for why)."""
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    try:
        from yaml.cyaml import CParser
    except ImportError:  # PyYAML built without libyaml
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PyLoader(Reader, Scanner, Parser, Composer, SafeConstructor, Resolver):
            def __init__(self, text: str) -> None:
                Reader.__init__(self, text)
                Scanner.__init__(self)
                Parser.__init__(self)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)

        return PyLoader

    # Composer first in the MRO: its Python get_single_node/compose_* replace CParser's.
    class CLoader(Composer, CParser, SafeConstructor, Resolver):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return CLoader


def _check_graph(root: Any, source: str) -> None:
    """Refuse duplicate keys, recursive aliases and alias bombs, on the node graph.

    Each distinct node is visited once (iteratively: no recursion limit) while its
    expanded size, the node count with every alias replaced by a copy, is summed
    bottom-up; a node reached again is an alias. A subtree whose expanded size exceeds
    the distinct nodes seen so far by more than the budget is refused at once, so the
    sums never grow past budget + document size however large the bomb.
    """
    from yaml.nodes import MappingNode, ScalarNode

    budget = MAX_ALIAS_NODES
    expanded: dict[int, int] = {}  # id(node) -> expanded size, for finished nodes
    open_nodes: set[int] = set()  # on the current path: reaching one again is a cycle
    distinct = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[key] - distinct > budget:
                raise YamlError(f"{source}: YAML aliases expand to more than {budget:,} extra nodes "
                                f"(line {node.start_mark.line + 1}); refusing an alias bomb")
            continue
        if key in expanded:
            continue
        if key in open_nodes:
            raise YamlError(f"{source}: recursive YAML alias at line {node.start_mark.line + 1}")
        open_nodes.add(key)
        distinct += 1
        if isinstance(node, MappingNode):
            _check_keys(node, source, ScalarNode)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in expanded)


def _children(node: Any) -> list[Any]:
    from yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_keys(node: Any, source: str, scalar_node: type) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        # Only plain keys: complex keys are rare, and merge keys (<<) may legally repeat
        # what they merge in.
        if not isinstance(key_node, scalar_node) or key_node.tag == _MERGE_TAG:
            continue
        line = key_node.start_mark.line + 1
        name = (key_node.tag, key_node.value)
        if name in seen:
            raise YamlError(f"{source}: duplicate key {echo(key_node.value)} at line {line} "
                            f"(first at line {seen[name]})")
        seen[name] = line
