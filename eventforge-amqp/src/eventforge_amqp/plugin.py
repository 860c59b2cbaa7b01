"""Hook implementations of eventforge-amqp: registers the ``amqp`` transport.

Imports only eventforge and the standard library; aiormq is imported when an
:class:`~eventforge_amqp.transport.AmqpTransport` is created.
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
            name="amqp",
            target="eventforge_amqp.transport:AmqpTransport",
            summary="RabbitMQ (AMQP 0-9-1): exchanges, competing groups, direct reply-to RPC, "
            "quorum-queue work queues.",
            schemes=("amqp", "amqps"),
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
                }
            ),
            requires=("aiormq",),
            exports=("AmqpTransport",),
        )
    ]
