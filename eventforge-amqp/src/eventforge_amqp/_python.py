"""The Python the transport needs: 3.11 or newer, as its client (aiormq 7) does.

aiormq 6, the last line for Python 3.10, has no consumer-cancel notices and its pamqp 3 refuses
queue names RabbitMQ accepts, so on 3.10 the package installs without aiormq and refuses to load
the transport with this reason, instead of running on a client it was not built for.
"""

from __future__ import annotations

import sys

__all__ = ["PYTHON_SUPPORTED", "check_python"]

PYTHON_SUPPORTED: bool = sys.version_info >= (3, 11)


def check_python() -> None:
    """Raise ``ImportError`` with the reason on a Python older than 3.11."""
    if not PYTHON_SUPPORTED:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise ImportError(
            f"eventforge-amqp needs Python 3.11 or newer, and this is Python {version}: its AMQP "
            "client, aiormq 7, needs 3.11 (aiormq 6, the last line for 3.10, has no "
            "consumer-cancel notices and refuses queue names RabbitMQ accepts). Run on Python "
            "3.11+, or pick another transport (eventforge plugins lists them).",
            name="eventforge_amqp",
        )
