"""The options of the redis transport: one table, read from a URL's query and from keywords.

``redis://host:6379/0?health_check_interval=2&ssl_check_hostname=on`` and
``RedisTransport(host="host", health_check_interval=2, ssl_check_hostname=True)`` are the same:
both go through :data:`OPTIONS`, so a boolean reads ``1/true/yes/on`` and ``0/false/no/off``
(any case) and an unknown or invalid option is a
:class:`~eventforge.errors.ConfigurationError` naming it, wherever it was given. The address
(host, port, TLS by ``rediss://``, user, password, database) comes from the URL itself or from
the ``host`` / ``port`` / ``ssl`` keywords; ``username``, ``password`` and ``db`` may also be
given as options, which win over the URL's.
"""

from __future__ import annotations

from typing import Any

from eventforge.transport import Option, OptionTable, to_bool, to_int, to_seconds

__all__ = ["CONNECTION_OPTIONS", "OPTIONS", "SSL_OPTIONS"]


def _positive_seconds(value: str | float) -> float:
    seconds = to_seconds(value)
    if seconds <= 0:
        raise ValueError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _positive_int(value: str | int) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    return number


def _db(value: str | int) -> int:
    number = to_int(value)
    if number < 0:
        raise ValueError(f"expected a database number >= 0, got {value!r}")
    return number


def _name(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected a non-empty name without spaces, got {value!r}")
    return text


def _cert_reqs(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("none", "optional", "required"):
        raise ValueError(f"expected none, optional or required, got {value!r}")
    return text


OPTIONS = OptionTable(
    "redis",
    # -- the connection (RedisSettings) -----------------------------------------------------------
    Option("db", _db, 0, doc="database number (default: the URL's path, else 0)"),
    Option("username", str, None, doc="ACL user name (default: the URL's)"),
    Option("password", str, None, secret=True, doc="password (default: the URL's)"),
    Option("socket_timeout", _positive_seconds, 5.0, doc="seconds any answer may take"),
    Option("socket_connect_timeout", _positive_seconds, 5.0, doc="seconds to connect"),
    Option("client_name", str, None, doc="name shown by CLIENT LIST"),
    Option("ssl_cert_reqs", _cert_reqs, None, doc="certificate check: none, optional, required"),
    Option("ssl_ca_certs", str, None, doc="CA file that signs the server's certificate"),
    Option("ssl_certfile", str, None, doc="client certificate file"),
    Option("ssl_keyfile", str, None, doc="client key file"),
    Option("ssl_check_hostname", to_bool, None, doc="check the certificate names the host"),
    # -- the transport ------------------------------------------------------------------------------
    Option(
        "health_check_interval",
        _positive_seconds,
        10.0,
        doc="seconds of silence before the pub/sub link is PINGed",
    ),
    Option("block", _positive_seconds, 1.0, doc="seconds a stream read blocks"),
    Option(
        "claim_idle",
        _positive_seconds,
        30.0,
        doc="seconds an unsettled entry waits before another consumer takes it over",
    ),
    Option("key_prefix", _name, "eventforge", doc="namespace of every key the transport writes"),
    Option("group_maxlen", _positive_int, 100_000, doc="approximate cap of a group stream"),
    Option("max_pending", _positive_int, 10_000, doc="publishes queued for the writer"),
    Option(
        "max_delivery_backlog",
        _positive_int,
        100_000,
        doc="messages waiting for the delivery thread; beyond it new ones are dropped",
    ),
    Option("reconnect_initial", to_seconds, 0.05, doc="first reconnect delay in seconds"),
    Option("reconnect_max", to_seconds, 1.0, doc="longest reconnect delay in seconds"),
)

SSL_OPTIONS: tuple[str, ...] = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
"""Options handed to redis-py's TLS connection as they are (when given)."""

CONNECTION_OPTIONS: frozenset[str] = frozenset(
    {"db", "username", "password", "socket_timeout", "socket_connect_timeout", "client_name"}
    | set(SSL_OPTIONS)
)
"""The options that make up :class:`~eventforge_redis.RedisSettings`; the rest are the
transport's own."""
