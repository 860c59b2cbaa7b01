"""Connection settings of a NATS transport: validation, URL parsing and the nats-py options.

The defaults are pinned on purpose (they differ from nats-py's):

* ``ping_interval=10`` s and ``max_outstanding_pings=2``: a half-open link is noticed within
  about 30 s instead of the four minutes of the client defaults;
* ``max_reconnect_attempts=-1``: once connected, reconnect forever (the client default gives up
  after about two minutes and drops its buffer); the state is visible in ``stats()``;
* ``pending_size=2 MiB``: publishes made while reconnecting are buffered up to this many bytes,
  then ``publish`` raises instead of buffering without bound;
* the *first* connect is bounded: ``connect_attempts`` tries per server, and an authorization
  error fails at once.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from eventforge.errors import ConfigurationError

__all__ = ["NatsSettings", "parse_url"]

_SCHEMES = ("nats", "tls")
_FLOAT_QUERY = ("connect_timeout", "ping_interval", "reconnect_time_wait")
_INT_QUERY = ("max_outstanding_pings", "connect_attempts", "pending_size", "max_pending")
_STR_QUERY = ("name", "token", "user", "password", "credentials", "tls_ca", "tls_cert", "tls_key")


@dataclass
class NatsSettings:
    """Everything needed to open one NATS connection (see the module docstring for defaults)."""

    servers: list[str] = field(default_factory=lambda: ["nats://localhost:4222"])
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

    def __post_init__(self) -> None:
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
        for key in ("connect_timeout", "ping_interval"):
            if not float(getattr(self, key)) > 0:
                raise ConfigurationError(f"{key} must be > 0, got {getattr(self, key)!r}", key=key)
        if self.reconnect_time_wait < 0:
            raise ConfigurationError("reconnect_time_wait must be >= 0", key="reconnect_time_wait")
        for key in ("connect_attempts", "max_outstanding_pings", "max_pending"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{key} must be an int >= 1, got {value!r}", key=key)
        if not isinstance(self.pending_size, int) or self.pending_size < 0:
            raise ConfigurationError("pending_size must be an int >= 0", key="pending_size")
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


def parse_url(url: str, **overrides: Any) -> NatsSettings:
    """Build settings from ``nats://[user:pass@]host[:port][,host2:port2][?option=value&...]``.

    Query options: ``name``, ``token``, ``user``, ``password``, ``credentials`` (a .creds
    file), ``tls_ca`` / ``tls_cert`` / ``tls_key`` (file paths), ``connect_timeout``,
    ``ping_interval``, ``reconnect_time_wait``, ``max_outstanding_pings``, ``connect_attempts``,
    ``pending_size``, ``max_pending``. Keyword ``overrides`` win over the URL.
    """
    base, _, query = url.partition("?")
    scheme = base.partition("://")[0]
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"NATS URL {_mask(url)!r} has scheme {scheme!r}; use nats:// or tls://", key="url"
        )
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1]
        try:
            if key in _FLOAT_QUERY:
                options[key] = float(value)
            elif key in _INT_QUERY:
                options[key] = int(value)
            elif key in _STR_QUERY:
                options[key] = unquote(value)
            else:
                known = ", ".join(sorted((*_FLOAT_QUERY, *_INT_QUERY, *_STR_QUERY)))
                raise ConfigurationError(
                    f"unknown NATS URL option {key!r}; known options: {known}", key=key
                )
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"NATS URL option {key}={value!r}: {exc}", key=key) from None
    options.update(overrides)
    return NatsSettings(servers=split_servers(base), **options)


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


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0] if ":" in userinfo else "***"
    masked = f"{user}:***" if ":" in userinfo else user
    return url.replace(parts.netloc, f"{masked}@{hostport}", 1)


def servers_from(value: str | Sequence[str]) -> list[str]:
    """Normalize a server argument (one URL, a comma list, or a sequence) into a URL list."""
    if isinstance(value, str):
        return split_servers(value)
    urls: list[str] = []
    for item in value:
        urls.extend(split_servers(item))
    return urls
