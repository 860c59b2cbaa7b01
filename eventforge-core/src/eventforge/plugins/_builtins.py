"""The core's own plugins, registered through the same hooks as any third party's."""

from __future__ import annotations

from eventforge.plugins._records import (
    DispatcherSpec,
    MiddlewareSpec,
    SerializerSpec,
    TransportSpec,
)
from eventforge.plugins.hookspecs import hookimpl
from eventforge.transport import (
    LOCAL_CAPABILITIES,
    MEMORY_CAPABILITIES,
    ROUNDTRIP_CAPABILITIES,
)

__all__: list[str] = []


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    return [
        TransportSpec(
            name="memory",
            target="eventforge.transports.memory:MemoryTransport",
            summary="In-process, thread-safe, zero serialization (the default).",
            aliases=("mem", "inprocess"),
            schemes=("memory",),
            capabilities=MEMORY_CAPABILITIES,
            exports=("MemoryTransport",),
        ),
        TransportSpec(
            name="local",
            target="eventforge.transports.local:LocalTransport",
            summary="Durable, broker-less messaging between processes of one machine (SQLite).",
            aliases=("sqlite",),
            schemes=("local",),
            capabilities=LOCAL_CAPABILITIES,
            exports=("LocalTransport",),
        ),
        TransportSpec(
            name="roundtrip",
            target="eventforge.transports.roundtrip:RoundTripTransport",
            summary="The memory transport, every message through the serializer (for tests).",
            schemes=("roundtrip",),
            capabilities=ROUNDTRIP_CAPABILITIES,
        ),
    ]


@hookimpl
def eventforge_serializers() -> list[SerializerSpec]:
    return [
        SerializerSpec(
            name="json",
            target="eventforge.wire.serializers:JsonSerializer",
            summary="JSON via pydantic-core (default); models and dataclasses as objects.",
            content_type="application/json",
        ),
        SerializerSpec(
            name="msgpack",
            target="eventforge.wire.serializers:MsgpackSerializer",
            summary="MessagePack; needs the optional 'msgpack' package.",
            content_type="application/msgpack",
            requires=("msgpack",),
        ),
        SerializerSpec(
            name="pickle",
            target="eventforge.wire.serializers:PickleSerializer",
            summary="Python pickle; refused on receive unless peers are trusted.",
            content_type="application/x-python-pickle",
            trusted_only=True,
        ),
        SerializerSpec(
            name="bytes",
            target="eventforge.wire.serializers:BytesSerializer",
            summary="A bytes payload unchanged (chosen by the JSON codec for bytes payloads).",
            content_type="application/octet-stream",
        ),
    ]


@hookimpl
def eventforge_dispatchers() -> list[DispatcherSpec]:
    return [
        DispatcherSpec(
            name="broadcast",
            target="eventforge.dispatch:BroadcastDispatcher",
            summary="Every target, in order; one target's error does not stop the others.",
            aliases=("all", "fanout"),
        ),
        DispatcherSpec(
            name="round_robin",
            target="eventforge.dispatch:RoundRobinDispatcher",
            summary="One target per event, each in turn (the default for groups and pools).",
            aliases=("round-robin", "roundrobin", "rr"),
        ),
        DispatcherSpec(
            name="concurrent",
            target="eventforge.dispatch:ConcurrentDispatcher",
            summary="Every target in parallel on a thread pool; returns when all are done.",
            aliases=("parallel",),
        ),
        DispatcherSpec(
            name="least_loaded",
            target="eventforge.dispatch:LeastLoadedDispatcher",
            summary="One target per event: the one with the fewest calls in flight.",
            aliases=("least-loaded", "leastloaded"),
        ),
    ]


@hookimpl
def eventforge_middleware() -> list[MiddlewareSpec]:
    return [
        MiddlewareSpec(
            name="dedupe",
            target="eventforge.middleware:Dedupe",
            summary="Skip messages whose id was handled recently (redeliveries, duplicates).",
        )
    ]
