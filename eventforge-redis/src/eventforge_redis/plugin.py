"""Hook implementations of eventforge-redis.

Imports only eventforge and the standard library: listing plugins never imports redis.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__ = ["eventforge_transports"]


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    """Register the ``redis`` transport (URL schemes ``redis`` and ``rediss``)."""
    return [
        TransportSpec(
            name="redis",
            target="eventforge_redis.transport:RedisTransport",
            summary="Redis pub/sub, consumer groups and durable work queues on Redis Streams.",
            schemes=("redis", "rediss"),
            capabilities=frozenset(
                {
                    Capability.WILDCARDS,
                    Capability.GROUPS,
                    Capability.HEADERS,
                    Capability.ORDERED,
                    Capability.CROSS_PROCESS,
                    Capability.DURABLE,
                    Capability.CLAIMS,
                }
            ),
            requires=("redis",),
            exports=(
                "RedisTransport",
                "RedisWorkQueueBackend",
                "RedisAuthError",
                "RedisPermissionError",
            ),
        )
    ]
