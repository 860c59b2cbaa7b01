"""``roundtrip://``: the memory transport, with every message encoded and decoded on the way.

The memory transport hands subscribers the very object that was published, so a test that
passes on it may publish a ``set``, a ``tuple`` or a ``datetime`` that TCP, Redis or NATS would
deliver as a ``list`` or a ``str``. This transport first puts every sent message through the
wire codec with the configured serializer (exactly what the network transports do), so what a
subscriber gets here is what it would get over the network: use it in tests::

    EVENTFORGE_TRANSPORT="roundtrip://?serializer=json"   # or serializer=msgpack

A message that cannot be encoded raises :class:`~eventforge.errors.SerializationError` at
``send``, as it would on a network transport. Everything else (groups, wildcards, buffered
``receive``, the per-topic bound) is the memory transport's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.transport import ROUNDTRIP_CAPABILITIES
from eventforge.transport.urls import mask_url, parse_bool, query_options, split_url
from eventforge.transports.memory import MemoryTransport
from eventforge.wire import DEFAULT_MAX_SIZE, WireCodec

__all__ = ["RoundTripTransport"]


class RoundTripTransport(MemoryTransport):
    """In-process pub/sub where every message is serialized and deserialized on ``send``."""

    name: ClassVar[str] = "roundtrip"
    capabilities: ClassVar[frozenset[str]] = ROUNDTRIP_CAPABILITIES

    def __init__(
        self,
        max_queue_size: int = 1000,
        *,
        overflow: str = "drop_oldest",
        serializer: str = "json",
        trusted: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        super().__init__(max_queue_size, overflow=overflow)
        self.codec = WireCodec(serializer, trusted=trusted, max_size=max_size)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RoundTripTransport:
        """Build from ``roundtrip://?serializer=msgpack&max_queue_size=100``."""
        parts = split_url(url, "roundtrip")
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                f"{mask_url(url)!r}: roundtrip:// URLs name no host or path; options go in the "
                "query, e.g. roundtrip://?serializer=msgpack",
                key="transport",
            )
        converters: dict[str, Callable[[str], Any]] = {
            "max_queue_size": int,
            "overflow": str,
            "serializer": str,
            "trusted": parse_bool,
            "max_size": int,
        }
        return cls(**query_options(url, converters, **options))

    def send(self, message: Message) -> None:
        codec = self.codec
        super().send(codec.decode(codec.encode(message)))

    def send_counted(self, message: Message) -> int:
        codec = self.codec
        return super().send_counted(codec.decode(codec.encode(message)))

    def __repr__(self) -> str:
        return f"RoundTripTransport(serializer={self.codec.serializer.name!r})"
