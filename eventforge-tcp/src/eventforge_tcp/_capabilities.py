"""What the ``tcp`` transport can do, declared once: the plugin record and the classes share it.

Import-light on purpose: :mod:`eventforge_tcp.plugin` reads it without importing the transport.
"""

from __future__ import annotations

from typing import Final

from eventforge.transport import Capability

__all__ = ["CAPABILITIES"]

CAPABILITIES: Final = frozenset(
    {
        Capability.WILDCARDS,
        Capability.GROUPS,
        Capability.HEADERS,
        Capability.ORDERED,
        Capability.CROSS_PROCESS,
        Capability.NONBLOCKING_INLINE,
    }
)
