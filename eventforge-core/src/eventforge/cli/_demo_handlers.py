"""Handlers that ``eventforge demo`` serves from a worker process (the worker contract)."""

from __future__ import annotations

import os

SERVICE_NAME = "demo"


def square(x: int) -> int:
    """Return ``x * x``."""
    return x * x


def whoami() -> int:
    """Return the serving process id (shows the call crossed a process boundary)."""
    return os.getpid()


HANDLERS = {"square": square, "whoami": whoami}
