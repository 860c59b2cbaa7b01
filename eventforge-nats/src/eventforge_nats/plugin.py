"""Hook implementations of eventforge-nats: registers the ``nats`` transport.

Imports only eventforge and the standard library; nats-py is imported when a
:class:`~eventforge_nats.transport.NatsTransport` is created.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__: list[str] = []


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    return [
        TransportSpec(
            name="nats",
            target="eventforge_nats.transport:NatsTransport",
            summary="NATS: pub/sub, queue groups, native request-reply, JetStream work queues.",
            schemes=("nats", "tls"),
            capabilities=frozenset(
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
                }
            ),
            requires=("nats",),
            exports=("NatsTransport",),
        )
    ]
