"""Echoing user input in error messages without echoing all of it.

A message names the bad value so the user can find it, but a 1 MB arch string or YAML
field must not become a 1 MB error line: every echo of user text goes through here.
"""
from __future__ import annotations

__all__ = ["ECHO_LIMIT", "clip", "echo"]

#: Characters of a user's value that a message repeats.
ECHO_LIMIT = 100


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters; a cut says how long the whole was.

    >>> clip("abc"), clip("x" * 5000, 4)
    ('abc', 'xxxx... (5,000 characters)')
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` clipped to ``limit`` characters, for quoting a user's value.

    A cut says how long the value was: a string's own length, else its ``repr``'s.

    >>> echo("mb_r1"), echo("x" * 5000, 8), echo(list(range(100)), 12)
    ("'mb_r1'", "'xxxxxxx... (5,000 characters)", '[0, 1, 2, 3,... (390 characters)')
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value) if isinstance(value, str) else len(text):,} characters)"
