"""The options of the ``tcp`` transport: one table per side, read from a URL's query and from keywords.

``TCPClientTransport("hub", 9090, heartbeat_interval=2, offline="raise")`` and
``tcp://hub:9090?heartbeat_interval=2&offline=raise`` are read by the same
:class:`~eventforge.transport.OptionTable`, so a value means the same wherever it is given
(``reconnect=on`` is true in both) and an unknown or invalid option is reported the same way.
A URL also carries what only a URL can say: ``listen=1`` (a server instead of a client), the
token as the password (``tcp://:secret@host:port``), and for ``tcps://`` the PEM files
``ca``, ``cert`` and ``key`` that become an :class:`ssl.SSLContext`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from eventforge.errors import ConfigurationError
from eventforge.transport import Option, OptionTable, to_bool, to_int, to_seconds
from eventforge.transport.urls import mask_url, split_url

from ._liveness import DEFAULT_FRAME_TIMEOUT
from .framing import DEFAULT_MAX_FRAME_SIZE

__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_PORT",
    "OFFLINE_MODES",
    "SERVER_OPTIONS",
    "URL_OPTIONS",
    "TCPAddress",
    "check_port",
    "read_url",
]

DEFAULT_PORT = 9090
OFFLINE_MODES = ("buffer", "raise")
MIN_FRAME_SIZE = 256


def _token(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _ssl_context(value: Any) -> ssl.SSLContext:
    if not isinstance(value, ssl.SSLContext):
        raise ValueError(
            f"expected an ssl.SSLContext, got {type(value).__name__} (in a URL, use tcps:// "
            "with ca=, cert= and key=)"
        )
    return value


def _positive_seconds(value: Any) -> float:
    seconds = to_seconds(value)
    if seconds <= 0:
        raise ValueError("expected a duration in seconds > 0")
    return seconds


def _at_least(low: int) -> Any:
    def convert(value: Any) -> int:
        number = to_int(value)
        if number < low:
            raise ValueError(f"expected a whole number >= {low}")
        return number

    return convert


def _offline(value: Any) -> str:
    if value not in OFFLINE_MODES:
        raise ValueError(f"expected one of {', '.join(OFFLINE_MODES)}")
    return str(value)


def _serializer(value: Any) -> Any:
    if isinstance(value, str) and not value:
        raise ValueError("expected a serializer name such as json, msgpack or pickle")
    return value  # a name or a Serializer: the wire codec checks it


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


_COMMON = (
    Option("token", _token, None, secret=True, doc="shared secret of the hello"),
    Option("ssl_context", _ssl_context, None, doc="TLS for every connection (keyword only)"),
    Option("max_frame_size", _at_least(MIN_FRAME_SIZE), DEFAULT_MAX_FRAME_SIZE,
           doc="largest frame accepted or sent, in bytes"),
    Option("max_send_buffer", _at_least(MIN_FRAME_SIZE), 8 * 1024 * 1024,
           doc="bytes queued per connection (client: also the offline buffer)"),
    Option("heartbeat_interval", _positive_seconds, 5.0, doc="ping after this much silence"),
    Option("heartbeat_timeout", _positive_seconds, None,
           doc="declare a silent peer dead (default: 3 x heartbeat_interval)"),
    Option("frame_timeout", _positive_seconds, DEFAULT_FRAME_TIMEOUT,
           doc="seconds for a frame to arrive whole after its first byte"),
    Option("max_pending", _at_least(1), 10_000,
           doc="deliveries waiting for the delivery thread before reading pauses"),
    Option("serializer", _serializer, None, doc="payload serializer (default json)"),
    Option("trusted", to_bool, False, doc="accept payloads of trusted-only serializers (pickle)"),
)  # fmt: skip

CLIENT_OPTIONS = OptionTable(
    "tcp client",
    *_COMMON,
    Option("write_deadline", _positive_seconds, 30.0,
           doc="disconnect a server that reads nothing for this long with data waiting"),
    Option("server_hostname", _text, None, doc="name checked in the server's TLS certificate"),
    Option("client_name", _text, None, doc="shown in the server's logs"),
    Option("connect_timeout", _positive_seconds, 5.0, doc="seconds for one connection attempt"),
    Option("reconnect", to_bool, True, doc="reconnect by itself after the link dropped"),
    Option("reconnect_delay", to_seconds, 0.05, doc="first reconnect delay in seconds"),
    Option("reconnect_max_delay", to_seconds, 2.0, doc="longest reconnect delay in seconds"),
    Option("offline", _offline, "buffer", doc="while disconnected: buffer or raise"),
    Option("send_timeout", to_seconds, 10.0, doc="seconds send waits for room in a full buffer"),
    Option("subscribe_timeout", to_seconds, 5.0, doc="seconds subscribe waits for the server"),
    Option("count_timeout", to_seconds, 5.0, doc="seconds send_counted waits for the count"),
)  # fmt: skip

SERVER_OPTIONS = OptionTable(
    "tcp server",
    *_COMMON,
    Option("write_deadline", _positive_seconds, 10.0,
           doc="disconnect a client that reads nothing for this long with data waiting"),
    Option("max_connections", _at_least(1), 1024, doc="connections served at once"),
    Option("hello_timeout", _positive_seconds, 3.0, doc="seconds to complete TLS and the hello"),
    Option("backlog", _at_least(0), 128, doc="the listen backlog"),
)  # fmt: skip

_URL_ONLY = (
    Option("listen", to_bool, False, doc="a started server instead of a connected client"),
    Option("ca", _text, None, doc="tcps://: CA file (server: require client certificates)"),
    Option("cert", _text, None, doc="tcps://: certificate file (required by a server)"),
    Option("key", _text, None, doc="tcps://: private key file of cert"),
)
_URL_ONLY_NAMES = tuple(option.name for option in _URL_ONLY)
_TLS_FILES = ("ca", "cert", "key")


def _union(*tables: OptionTable) -> tuple[Option, ...]:
    seen: dict[str, Option] = {}
    for table in tables:
        for option in table.options:
            seen.setdefault(option.name, option)
    return tuple(seen.values())


URL_OPTIONS = OptionTable("tcp", *_union(CLIENT_OPTIONS, SERVER_OPTIONS), *_URL_ONLY)
"""Everything a ``tcp://`` / ``tcps://`` query may carry (either side's options, and more)."""


def check_port(port: object, *, allow_zero: bool) -> int:
    """Return ``port`` when it is a valid TCP port (a server may ask for 0: any free one)."""
    low = 0 if allow_zero else 1
    if not isinstance(port, int) or isinstance(port, bool) or not low <= port <= 65535:
        raise ConfigurationError(f"port must be an int in {low}..65535, got {port!r}", key="port")
    return port


@dataclass(frozen=True)
class TCPAddress:
    """What a ``tcp://`` URL asks for: a server (``listen``) or a client, where, with what."""

    listen: bool
    host: str
    port: int
    options: dict[str, Any]


def _tls_context(server: bool, files: dict[str, str], url: str) -> ssl.SSLContext:
    ca, cert, key = files.get("ca"), files.get("cert"), files.get("key")
    if server:
        if not cert or not key:
            raise ConfigurationError(
                f"a tcps:// server needs ?cert=PATH&key=PATH (PEM files): {mask_url(url)!r}",
                key="transport.cert",
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


def read_url(url: str, keywords: dict[str, Any]) -> TCPAddress:
    """Read ``tcp[s]://[:token@]host[:port][?option=value&...]``; ``keywords`` win over the URL.

    Options of the other side are refused with a hint (``max_connections`` without
    ``listen=1``, ``reconnect`` with it); the keywords are checked by the class itself.
    """
    parts = split_url(url, "tcp", "tcps")
    tls = parts.scheme.lower() == "tcps"
    query = URL_OPTIONS.from_query(url)
    listen = bool(query.pop("listen", False))
    files = {name: query.pop(name) for name in _TLS_FILES if name in query}
    if files and not tls:
        raise ConfigurationError(
            f"{', '.join(sorted(files))} in {mask_url(url)!r} name TLS files: use tcps://",
            key=f"transport.{sorted(files)[0]}",
        )
    side = SERVER_OPTIONS if listen else CLIENT_OPTIONS
    for name in query:
        if name not in side.names:
            hint = "drop listen=1 for a client" if listen else "add listen=1 for a server"
            raise ConfigurationError(
                f"tcp option {name!r} in {mask_url(url)!r} is not a {side.transport} option "
                f"({hint}); accepted: {', '.join(sorted([*side.names, *_URL_ONLY_NAMES]))}",
                key=f"transport.{name}",
            )
    if parts.password and "token" not in query:
        query["token"] = unquote(parts.password)
    if tls and keywords.get("ssl_context") is None:
        query["ssl_context"] = _tls_context(listen, files, url)
    return TCPAddress(
        listen=listen,
        host=parts.hostname or "localhost",
        port=parts.port if parts.port is not None else DEFAULT_PORT,
        options={**query, **keywords},
    )
