"""eventforge-tcp: the broker-less TCP transport of eventforge.

Import the transports from ``eventforge.transports.tcp`` (or ``eventforge_tcp.transport``);
this package module stays light so that plugin discovery imports nothing but the hook module.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AuthenticationError", "TCPClientTransport", "TCPServerTransport", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("TCPServerTransport", "TCPClientTransport", "AuthenticationError"):
        from . import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'eventforge_tcp' has no attribute {name!r}")
