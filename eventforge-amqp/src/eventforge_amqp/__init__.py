"""eventforge-amqp: the ``amqp`` transport for eventforge (RabbitMQ, AMQP 0-9-1).

Import :class:`AmqpTransport` from ``eventforge.transports.amqp`` (or from here). Importing this
package does not import aiormq; the transport module is loaded on first use of a name.

The transport needs Python 3.11 or newer (its client, aiormq 7, does): on Python 3.10 the package
installs without aiormq, and the first use of a name raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._python import check_python

__version__ = "0.1.0"
__all__ = [
    "AmqpAuthError",
    "AmqpConnectError",
    "AmqpTransport",
    "AmqpWorkQueue",
    "TopologyConflictError",
    "__version__",
]

if TYPE_CHECKING:
    from ._topology import TopologyConflictError
    from .transport import AmqpAuthError, AmqpConnectError, AmqpTransport
    from .workqueue import AmqpWorkQueue

_EXPORTS = {
    "AmqpTransport": ".transport",
    "AmqpAuthError": ".transport",
    "AmqpConnectError": ".transport",
    "AmqpWorkQueue": ".workqueue",
    "TopologyConflictError": "._topology",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eventforge_amqp' has no attribute {name!r}")
    check_python()
    return getattr(importlib.import_module(module, __name__), name)
