"""Before a search: ``nas estimate`` (what the search will cost on this machine)."""
from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """No command yet: ``nas estimate`` is being built."""
