"""The ``tcp`` transport's public names and its URL form.

``eventforge.transports.tcp`` re-exports :class:`TCPServerTransport` and
:class:`TCPClientTransport` from here, and ``eventforge.connect("tcp://host:port")`` calls
:meth:`TCPClientTransport.from_url` (also here as :func:`from_url`):

* ``tcp://host:port`` -- a connected :class:`TCPClientTransport`;
* ``tcp://host:port?listen=1`` -- a started :class:`TCPServerTransport` bound to ``host:port``;
* ``tcps://...`` -- the same over TLS (``?ca=``, ``?cert=``, ``?key=`` name PEM files; a server
  needs ``cert`` and ``key``; a server with ``ca`` requires client certificates: mutual TLS);
* ``tcp://:secret@host:port`` or ``?token=secret`` -- the shared token of the hello.

Every other option of the class can be given in the query too (``client_name``,
``connect_timeout``, ``max_frame_size``, ``reconnect=off``, ...), read by the same option table
as keywords; keyword ``options`` passed to :func:`from_url` win over the URL.
"""

from __future__ import annotations

from typing import Any

from eventforge.transport import Transport

from .client import TCPClientTransport
from .errors import AuthenticationError
from .server import TCPServerTransport

__all__ = ["AuthenticationError", "TCPClientTransport", "TCPServerTransport", "from_url"]


def from_url(url: str, **options: Any) -> Transport:
    """Build a connected client, or with ``?listen=1`` a started server, from a URL."""
    return TCPClientTransport.from_url(url, **options)
