"""The ``eventforge`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eventforge`` command."""
    print("eventforge", file=sys.stdout)
    return 0
