"""eventforge-nats: the ``nats`` transport for eventforge.

Import :class:`NatsTransport` from ``eventforge.transports.nats`` (or from here). Importing this
package does not import nats-py; the transport module is loaded on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "JetStreamWorkQueue",
    "NatsAuthError",
    "NatsConnectError",
    "NatsTransport",
    "__version__",
]

if TYPE_CHECKING:
    from .jetstream import JetStreamWorkQueue
    from .transport import NatsAuthError, NatsConnectError, NatsTransport

_EXPORTS = {
    "NatsTransport": ".transport",
    "NatsAuthError": ".transport",
    "NatsConnectError": ".transport",
    "JetStreamWorkQueue": ".jetstream",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eventforge_nats' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
