"""The ``tcp`` transport's public names and its URL form.

``eventforge.transports.tcp`` re-exports :class:`TCPServerTransport` and
:class:`TCPClientTransport` from here, and ``eventforge.connect("tcp://host:port")`` calls
:func:`from_url`:

* ``tcp://host:port`` -- a connected :class:`TCPClientTransport`;
* ``tcp://host:port?listen=1`` -- a started :class:`TCPServerTransport` bound to ``host:port``;
* ``tcps://...`` -- the same over TLS (``?ca=``, ``?cert=``, ``?key=`` name PEM files; a server
  needs ``cert`` and ``key``; a server with ``ca`` requires client certificates: mutual TLS);
* ``tcp://:secret@host:port`` or ``?token=secret`` -- the shared token of the hello.

Other query parameters (``client_name``, ``connect_timeout``, ``max_frame_size``, ...) become
keyword options; keyword ``options`` passed to :func:`from_url` win over the URL.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from eventforge.errors import ConfigurationError
from eventforge.transport import Transport

from .client import TCPClientTransport
from .errors import AuthenticationError
from .server import TCPServerTransport

__all__ = ["AuthenticationError", "TCPClientTransport", "TCPServerTransport", "from_url"]

DEFAULT_PORT = 9090
_TRUE = ("1", "true", "yes", "on")
_NUMERIC = {
    "connect_timeout": float,
    "send_timeout": float,
    "subscribe_timeout": float,
    "count_timeout": float,
    "heartbeat_interval": float,
    "heartbeat_timeout": float,
    "write_deadline": float,
    "frame_timeout": float,
    "hello_timeout": float,
    "reconnect_delay": float,
    "reconnect_max_delay": float,
    "max_frame_size": int,
    "max_send_buffer": int,
    "max_connections": int,
    "max_pending": int,
}
_STRINGS = ("client_name", "offline", "serializer", "server_hostname")


def _tls_context(server: bool, query: dict[str, str]) -> ssl.SSLContext:
    ca, cert, key = query.pop("ca", None), query.pop("cert", None), query.pop("key", None)
    if server:
        if not cert or not key:
            raise ConfigurationError(
                "a tcps:// server needs ?cert=PATH&key=PATH (PEM files)", key="cert"
            )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def from_url(url: str, **options: Any) -> Transport:
    """Build a connected client, or with ``?listen=1`` a started server, from a URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("tcp", "tcps"):
        raise ConfigurationError(
            f"URL {parts.scheme}://... is not a tcp URL; use tcp://host:port or tcps://host:port",
            key="url",
        )
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORT
    except ValueError:
        raise ConfigurationError(f"URL has an invalid port: {parts.netloc!r}", key="port") from None
    host = parts.hostname or "localhost"
    query = dict(parse_qsl(parts.query))
    listen = query.pop("listen", "").lower() in _TRUE
    kwargs: dict[str, Any] = {}
    if parts.password:
        kwargs["token"] = unquote(parts.password)
    if "token" in query:
        kwargs["token"] = query.pop("token")
    if "trusted" in query:
        kwargs["trusted"] = query.pop("trusted").lower() in _TRUE
    if "reconnect" in query:
        kwargs["reconnect"] = query.pop("reconnect").lower() in _TRUE
    if scheme == "tcps" and "ssl_context" not in options:
        kwargs["ssl_context"] = _tls_context(listen, query)
    for key in list(query):
        if key in _NUMERIC:
            try:
                kwargs[key] = _NUMERIC[key](query.pop(key))
            except ValueError:
                raise ConfigurationError(f"URL option {key} must be a number", key=key) from None
        elif key in _STRINGS:
            kwargs[key] = query.pop(key)
    if query:
        raise ConfigurationError(
            f"unknown tcp URL option(s): {', '.join(sorted(query))}; known: listen, token, "
            f"trusted, reconnect, ca, cert, key, {', '.join(sorted([*_NUMERIC, *_STRINGS]))}",
            key=sorted(query)[0],
        )
    kwargs.update(options)
    if listen:
        return TCPServerTransport(host, port, **kwargs).start()
    return TCPClientTransport(host, port, **kwargs).connect()
