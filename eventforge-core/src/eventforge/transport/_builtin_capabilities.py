"""The capabilities of the built-in transports, declared once.

The plugin records that make them selectable by name (``eventforge.plugins``) must stay
import-light, so they cannot import the transport classes; both read these sets instead.
"""

from __future__ import annotations

from eventforge.transport._base import Capability

__all__ = ["LOCAL_CAPABILITIES", "MEMORY_CAPABILITIES", "ROUNDTRIP_CAPABILITIES"]

MEMORY_CAPABILITIES = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.BUFFERED_RECEIVE,
        Capability.ZERO_COPY,
        Capability.CLAIMS,
        Capability.DELAYED_SEND,
        Capability.RESULTS,
    }
)
"""The in-process memory transport."""

ROUNDTRIP_CAPABILITIES = MEMORY_CAPABILITIES - {Capability.ZERO_COPY}
"""The memory transport with every message through the serializer: no zero copy."""

LOCAL_CAPABILITIES = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.CROSS_PROCESS,
        Capability.DURABLE,
        Capability.DURABLE_SUBSCRIPTIONS,
        Capability.NONBLOCKING_INLINE,
        Capability.CLAIMS,
        Capability.RESULTS,
    }
)
"""``local://``: SQLite in one directory, shared by the processes of one machine."""
