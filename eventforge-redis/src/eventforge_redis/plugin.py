"""Hook implementations of eventforge-redis, and what the transport declares it can do.

Imports only eventforge and the standard library, absolutely: plugin discovery runs this file
on its own, without importing the package, so listing plugins never imports redis or the
transport. :data:`CAPABILITIES` is declared here once; the transport class reuses it.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__ = ["CAPABILITIES", "eventforge_transports"]

CAPABILITIES: frozenset[str] = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.CROSS_PROCESS,
        Capability.DURABLE,
        Capability.CLAIMS,
        Capability.NONBLOCKING_INLINE,
        Capability.RESULTS,
    }
)


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    """Register the ``redis`` transport (URL schemes ``redis`` and ``rediss``)."""
    return [
        TransportSpec(
            name="redis",
            target="eventforge_redis.transport:RedisTransport",
            summary="Redis pub/sub, consumer groups and durable work queues on Redis Streams.",
            schemes=("redis", "rediss"),
            capabilities=CAPABILITIES,
            requires=("redis",),
            exports=(
                "RedisTransport",
                "RedisWorkQueueBackend",
                "RedisAuthError",
                "RedisPermissionError",
            ),
        )
    ]
