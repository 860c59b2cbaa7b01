"""The options of a NATS transport: one table, read from a URL's query and from keywords.

``NatsTransport("nats://h:4222?ping_interval=5&name=billing")`` and
``NatsTransport("nats://h:4222", ping_interval=5, name="billing")`` are the same; keywords win
over the URL. Unknown options, bad values and boolean spellings (``trusted=on``) read the same
as on every other transport (:class:`~eventforge.transport.OptionTable`).

The connection defaults are pinned on purpose (they differ from nats-py's):

* ``ping_interval=10`` s and ``max_outstanding_pings=2``: a half-open link is noticed within
  about 30 s instead of the four minutes of the client defaults;
* reconnect forever once connected (the client default gives up after about two minutes and
  drops its buffer); the state is visible in ``stats()``;
* ``pending_size=2 MiB``: publishes made while reconnecting are buffered up to this many bytes,
  then ``publish`` raises instead of buffering without bound;
* the *first* connect is bounded: ``connect_attempts`` tries per server, and an authorization
  error fails at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from eventforge.errors import ConfigurationError
from eventforge.transport import Option, OptionTable, to_bool, to_int, to_seconds
from eventforge.transport.urls import mask_url
from eventforge.wire import DEFAULT_MAX_SIZE

__all__ = ["OPTIONS", "NatsSettings", "parse_settings", "parse_url", "servers_from"]

DEFAULT_SERVER = "nats://localhost:4222"
_SCHEMES = ("nats", "tls")


def _positive_seconds(text: str | float) -> float:
    value = to_seconds(text)
    if not value > 0:
        raise ValueError(f"expected a duration in seconds > 0, got {text!r}")
    return value


def _whole(low: int) -> Any:
    def convert(text: str | int) -> int:
        value = to_int(text)
        if value < low:
            raise ValueError(f"expected a whole number >= {low}, got {value}")
        return value

    return convert


def _delivery(text: str) -> str:
    if text not in ("thread", "loop"):
        raise ValueError(f"expected 'thread' or 'loop', got {text!r}")
    return text


def _ssl_context(value: Any) -> ssl.SSLContext:
    if not isinstance(value, ssl.SSLContext):
        raise ValueError(
            f"expected an ssl.SSLContext given as a keyword, got {type(value).__name__}; in a URL "
            "ask for TLS with tls:// or the tls_ca / tls_cert / tls_key options"
        )
    return value


def _as_given(value: Any) -> Any:
    return value


OPTIONS = OptionTable(
    "nats",
    Option("name", str, None, doc="client name the server shows (connz)"),
    Option("user", str, None, doc="user name (or in the URL: nats://user:password@host)"),
    Option("password", str, None, secret=True, doc="password"),
    Option("token", str, None, secret=True, doc="authentication token"),
    Option("credentials", str, None, doc="a .creds file: user JWT and nkey seed"),
    Option("tls", _ssl_context, None, doc="an ssl.SSLContext used as it is (keyword only)"),
    Option("tls_ca", str, None, doc="CA file that signed the server's certificate"),
    Option("tls_cert", str, None, doc="client certificate file (mutual TLS)"),
    Option("tls_key", str, None, doc="client key file (mutual TLS)"),
    Option("tls_hostname", str, None, doc="name checked against the server's certificate"),
    Option("connect_timeout", _positive_seconds, 2.0, doc="seconds for one connect attempt"),
    Option("connect_attempts", _whole(1), 3, doc="first-connect attempts per server"),
    Option("reconnect_time_wait", to_seconds, 0.5, doc="pause between reconnects to a server"),
    Option("ping_interval", _positive_seconds, 10.0, doc="seconds between pings"),
    Option("max_outstanding_pings", _whole(1), 2, doc="unanswered pings before the link is stale"),
    Option("pending_size", _whole(0), 2 * 1024 * 1024, doc="bytes buffered while reconnecting"),
    Option("max_pending", _whole(1), 65536, doc="messages waiting for a slow callback"),
    Option("delivery", _delivery, "thread", doc="where callbacks run: thread or loop"),
    Option("ack_wait", _positive_seconds, 30.0, doc="JetStream redelivery after this many s"),
    Option("duplicate_window", _positive_seconds, 120.0, doc="JetStream dedupe window in s"),
    Option("serializer", _as_given, None, doc="payload serializer (name or object)"),
    Option("trusted", to_bool, False, doc="decode payloads of trusted-only serializers"),
    Option("max_size", _whole(1), DEFAULT_MAX_SIZE, doc="largest message envelope, in bytes"),
)


@dataclass
class NatsSettings:
    """Everything a NATS transport is configured with (see the module docstring for defaults).

    Every option is converted and checked by :data:`OPTIONS`, also when the settings are made
    directly; what involves several options (servers, token vs. user, certificate and key) is
    checked here.
    """

    servers: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    name: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials: str | None = None
    tls: ssl.SSLContext | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    connect_timeout: float = 2.0
    connect_attempts: int = 3
    reconnect_time_wait: float = 0.5
    ping_interval: float = 10.0
    max_outstanding_pings: int = 2
    pending_size: int = 2 * 1024 * 1024
    max_pending: int = 65536
    delivery: str = "thread"
    ack_wait: float = 30.0
    duplicate_window: float = 120.0
    serializer: Any = None
    trusted: bool = False
    max_size: int = DEFAULT_MAX_SIZE

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in OPTIONS.names}
        for name, value in OPTIONS.from_keywords(given).items():
            setattr(self, name, value)
        if not self.servers:
            raise ConfigurationError("at least one NATS server URL is needed", key="servers")
        for url in self.servers:
            scheme = urlsplit(url).scheme
            if scheme not in _SCHEMES:
                raise ConfigurationError(
                    f"NATS server URL {_mask(url)!r} has scheme {scheme!r}; use nats:// or tls://",
                    key="servers",
                )
            _check_port(url)
        if self.token and (self.user or self.password):
            raise ConfigurationError("give either token or user/password, not both", key="token")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("tls_cert and tls_key go together", key="tls_cert")

    @property
    def uses_tls(self) -> bool:
        """Tell whether the connection is encrypted (a ``tls://`` URL or TLS options)."""
        return (
            self.tls is not None
            or self.tls_ca is not None
            or self.tls_cert is not None
            or any(url.startswith("tls://") for url in self.servers)
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the TLS context from the file options (or return the one given)."""
        if self.tls is not None:
            return self.tls
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert is not None:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def safe_servers(self) -> list[str]:
        """The server URLs with any password or token masked (for messages and repr)."""
        return [_mask(url) for url in self.servers]

    def connect_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``nats.aio.client.Client.connect`` (callbacks excluded)."""
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": self.reconnect_time_wait,
            "max_reconnect_attempts": -1,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": self.max_outstanding_pings,
            "pending_size": self.pending_size,
            "allow_reconnect": True,
        }
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        if self.credentials is not None:
            kwargs["user_credentials"] = self.credentials
        context = self.ssl_context()
        if context is not None:
            kwargs["tls"] = context
        if self.tls_hostname is not None:
            kwargs["tls_hostname"] = self.tls_hostname
        return kwargs


def parse_settings(
    servers: str | Sequence[str] | None = None, keywords: Mapping[str, Any] | None = None
) -> NatsSettings:
    """Settings from a server argument (one URL, a comma list, or a sequence of URLs; a URL
    may carry options in its query) and keyword options, which win over the URL's."""
    url = None
    if not servers:
        servers = DEFAULT_SERVER
    elif isinstance(servers, str) and "?" in servers:
        url = _check_scheme(servers)
        servers = servers.partition("?")[0]
    # The table masks the query's secrets in its messages; a token in the user part of the
    # URL is NATS's own, masked here.
    values = OPTIONS.read(None if url is None else _mask_userinfo(url), keywords)
    return NatsSettings(servers=servers_from(servers), **values)


def parse_url(url: str, **overrides: Any) -> NatsSettings:
    """Settings from ``nats://[user:pass@]host[:port][,host2:port2][?option=value&...]``.

    The query takes every option of :data:`OPTIONS` but ``tls`` (an ``ssl.SSLContext``);
    keyword ``overrides`` win over the URL.
    """
    return parse_settings(_check_scheme(url), overrides)


def _check_scheme(url: str) -> str:
    scheme = url.partition("://")[0]
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"NATS URL {_mask(url)!r} has scheme {scheme!r}; use nats:// or tls://", key="url"
        )
    return url


def split_servers(text: str) -> list[str]:
    """Split ``"nats://a:4222,b:4223"`` (or a comma list of URLs) into one URL per server.

    Entries without a scheme inherit the scheme and credentials of the first one.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        return []
    first = urlsplit(parts[0] if "://" in parts[0] else f"nats://{parts[0]}")
    creds = first.netloc.rpartition("@")[0]
    urls = []
    for part in parts:
        if "://" in part:
            urls.append(part)
        else:
            userinfo = f"{creds}@" if creds else ""
            urls.append(f"{first.scheme}://{userinfo}{part}")
    return urls


def servers_from(value: str | Sequence[str]) -> list[str]:
    """Normalize a server argument (one URL, a comma list, or a sequence) into a URL list."""
    if isinstance(value, str):
        return split_servers(value)
    urls: list[str] = []
    for item in value:
        urls.extend(split_servers(item))
    return urls


def _check_port(url: str) -> None:
    """Refuse a server URL whose port is not an int in 1..65535, before any connection."""
    try:
        port = urlsplit(url).port
    except ValueError as exc:
        port, problem = -1, str(exc)
    else:
        problem = "port 0 cannot be connected to"
    if port is None or 0 < port < 65536:
        return
    raise ConfigurationError(
        f"NATS server URL {_mask(url)!r} has a bad port ({problem}); give an int in 1..65535, "
        "for example nats://host:4222",
        key="port",
    )


def _mask_userinfo(url: str) -> str:
    """Mask the password, or a user part without one: in a NATS URL that is a token."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    masked = f"{userinfo.partition(':')[0]}:***" if ":" in userinfo else "***"
    return url.replace(parts.netloc, f"{masked}@{hostport}", 1)


def _mask(url: str) -> str:
    """``url`` safe to show: the user part as :func:`_mask_userinfo`, query secrets masked."""
    return mask_url(_mask_userinfo(url))
