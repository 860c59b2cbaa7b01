"""Hook implementations of eventforge-amqp: registers the ``amqp`` transport.

Imports only eventforge and the standard library; aiormq is imported when an
:class:`~eventforge_amqp.transport.AmqpTransport` is created.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec

from ._capabilities import CAPABILITIES

__all__: list[str] = []


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    return [
        TransportSpec(
            name="amqp",
            # Through a module that refuses Python 3.10 with the reason (not a bare
            # "No module named 'aiormq'").
            target="eventforge_amqp._entry:AmqpTransport",
            summary="RabbitMQ (AMQP 0-9-1): exchanges, competing groups, direct reply-to RPC, "
            "quorum-queue work queues.",
            schemes=("amqp", "amqps"),
            capabilities=CAPABILITIES,
            requires=("aiormq",),
            exports=("AmqpTransport",),
        )
    ]
