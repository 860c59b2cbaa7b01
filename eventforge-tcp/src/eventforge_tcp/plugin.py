"""Hook implementations of eventforge-tcp: registers the ``tcp`` transport (imports nothing heavy)."""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import TransportSpec

from ._capabilities import CAPABILITIES

__all__ = ["eventforge_transports"]


@hookimpl
def eventforge_transports() -> list[TransportSpec]:
    """Describe the ``tcp`` transport (``tcp://`` and ``tcps://`` URLs)."""
    return [
        TransportSpec(
            name="tcp",
            target="eventforge_tcp.transport:TCPClientTransport",
            summary="Broker-less length-prefixed JSON over TCP (tcps:// for TLS); server + clients.",
            aliases=("tcps",),
            schemes=("tcp", "tcps"),
            capabilities=CAPABILITIES,
            exports=("TCPServerTransport", "TCPClientTransport", "AuthenticationError"),
        )
    ]
