"""Hook implementations: what this distribution provides to eventforge.

eventforge finds this module through the ``eventforge`` entry point in ``pyproject.toml``. It
imports only eventforge and the standard library, and names the transport by a
``"module:attr"`` string, so listing plugins never imports the transport itself.
"""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec
from eventforge.transport import Capability

__all__ = ["eventforge_transports"]


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    """Register the ``spool`` transport (URL ``spool:///path/to/dir``)."""
    return [
        TransportSpec(
            name="spool",
            target="eventforge_example_transport.transport:SpoolTransport",
            summary="Broker-less pub/sub between processes on one machine via a spool directory.",
            aliases=("spooldir",),
            schemes=("spool",),
            capabilities=frozenset(
                {
                    Capability.CROSS_PROCESS,
                    Capability.WILDCARDS,
                    Capability.HEADERS,
                    Capability.ORDERED,
                }
            ),
            exports=("SpoolTransport",),
        )
    ]
