"""What the AMQP transport declares: read by the import-light plugin record and the class."""

from __future__ import annotations

from eventforge.transport import Capability

__all__ = ["CAPABILITIES"]

CAPABILITIES = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.CROSS_PROCESS,
        Capability.NONBLOCKING_INLINE,
        Capability.REQUEST_REPLY,
        Capability.DURABLE,
        Capability.HEADER_MATCH,
    }
)
