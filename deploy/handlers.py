"""The handler module the deploy/ workers serve: ``python -m eventforge.worker --import handlers``."""

from __future__ import annotations

import os
import socket

SERVICE_NAME = "math"


def compute(x: float) -> float:
    """The example workload: square a number."""
    return x * x


def whoami() -> str:
    """Which worker answered (host name and process id), to see the load spread."""
    return f"{socket.gethostname()}:{os.getpid()}"


HANDLERS = {"compute": compute, "whoami": whoami}
