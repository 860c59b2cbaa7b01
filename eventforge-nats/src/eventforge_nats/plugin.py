"""Hook implementations of eventforge-nats: registers the ``nats`` transport.

Imports only eventforge and the standard library, with absolute imports: discovery runs this
module on its own, without importing the package, and nats-py is imported only when a
:class:`~eventforge_nats.transport.NatsTransport` is created. The transport's capabilities are
declared here, once; the class takes them from :data:`CAPABILITIES`.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__ = ["CAPABILITIES"]

CAPABILITIES: frozenset[str] = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.CROSS_PROCESS,
        Capability.NONBLOCKING_INLINE,
        Capability.REQUEST_REPLY,
        Capability.DURABLE,
        Capability.CLAIMS,
        Capability.RESULTS,
    }
)
"""What the ``nats`` transport declares (the plugin record and the class share it)."""


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    return [
        TransportSpec(
            name="nats",
            target="eventforge_nats.transport:NatsTransport",
            summary="NATS: pub/sub, queue groups, native request-reply, JetStream work queues.",
            schemes=("nats", "tls"),
            capabilities=CAPABILITIES,
            requires=("nats",),
            exports=("NatsTransport",),
        )
    ]
