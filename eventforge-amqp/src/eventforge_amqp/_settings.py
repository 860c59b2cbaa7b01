"""The options of the AMQP transport: one table, read from a URL's query and from keywords.

``amqp://user:password@host:5672/vhost?exchange=events&prefetch=200`` and
``AmqpTransport("amqp://host", exchange="events", prefetch=200)`` are the same. The user and
password live in the URL (or the ``user`` / ``password`` options); they are masked wherever the
URL is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from eventforge.errors import ConfigurationError
from eventforge.transport import Backoff, Option, OptionTable, to_bool, to_int, to_seconds
from eventforge.transport.urls import mask_url

from ._topology import exchange_kind, routes_option, valid_name

__all__ = ["OPTIONS", "AmqpSettings", "parse_settings"]


def _bounded(low: int, high: int) -> Any:
    def convert(text: str | int) -> int:
        value = to_int(text)
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value}")
        return value

    return convert


def _name(text: str) -> str:
    text = str(text)
    if len(text) > 200 or not valid_name(text):
        raise ValueError(
            f"expected a name of 1 to 200 letters, digits or -_.:@#,/+ characters, got {text!r}"
        )
    return text


def _delivery(text: str) -> str:
    if text not in ("thread", "loop"):
        raise ValueError(f"expected 'thread' or 'loop', got {text!r}")
    return text


OPTIONS = OptionTable(
    "amqp",
    Option("user", str, None, doc="user name (default: the URL's, else guest)"),
    Option("password", str, None, secret=True, doc="password (default: the URL's, else guest)"),
    Option("exchange", _name, "eventforge", doc="the name of the topic exchange"),
    Option(
        "fanout_exchange", _name, None, doc="the name of the fanout exchange (<exchange>.fanout)"
    ),
    Option(
        "headers_exchange", _name, None, doc="the name of the headers exchange (<exchange>.headers)"
    ),
    Option(
        "exchange_type",
        exchange_kind,
        "topic",
        doc="the exchange kind (topic, fanout or headers) of topics no route names",
    ),
    Option(
        "routes",
        routes_option,
        (),
        doc="topic pattern=exchange kind pairs, comma-separated; the first match wins",
    ),
    Option("heartbeat", _bounded(0, 3600), 30, doc="AMQP heartbeat in seconds (0: none)"),
    Option("connect_timeout", to_seconds, 10.0, doc="seconds for one connection attempt"),
    Option(
        "publish_timeout",
        to_seconds,
        10.0,
        doc="seconds a confirmed publish, a request or a flush may wait (blocked broker, "
        "reconnect) before it fails",
    ),
    Option("prefetch", _bounded(1, 65535), 100, doc="unacknowledged deliveries per consumer"),
    Option("max_pending", _bounded(1, 10_000_000), 100_000, doc="delivery queue bound"),
    Option("delivery", _delivery, "thread", doc="where callbacks run: thread or loop"),
    Option("reconnect_initial", to_seconds, 0.1, doc="first reconnect delay in seconds"),
    Option("reconnect_max", to_seconds, 5.0, doc="longest reconnect delay in seconds"),
    Option("delivery_limit", _bounded(1, 1_000_000), None, doc="work queue delivery limit"),
    Option("tls_ca", str, None, doc="CA file for amqps://"),
    Option("tls_cert", str, None, doc="client certificate file for amqps://"),
    Option("tls_key", str, None, doc="client key file for amqps://"),
    Option("tls_verify", to_bool, True, doc="verify the server's certificate (amqps://)"),
    Option("name", str, "eventforge", doc="connection name shown by rabbitmqctl"),
)


@dataclass(frozen=True)
class AmqpSettings:
    """Where and how to connect; built by :func:`parse_settings`."""

    scheme: str
    host: str
    port: int
    vhost: str
    user: str
    password: str
    options: dict[str, Any]

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    @property
    def backoff(self) -> Backoff:
        return Backoff(
            initial=self.options["reconnect_initial"],
            cap=max(self.options["reconnect_max"], self.options["reconnect_initial"]),
        )

    def client_url(self) -> str:
        """The URL handed to aiormq (credentials included: never log it)."""
        query = f"heartbeat={self.options['heartbeat']}&name={quote(self.options['name'])}"
        if self.tls:
            if self.options["tls_ca"]:
                query += f"&cafile={quote(self.options['tls_ca'])}"
            if self.options["tls_cert"]:
                query += f"&certfile={quote(self.options['tls_cert'])}"
            if self.options["tls_key"]:
                query += f"&keyfile={quote(self.options['tls_key'])}"
            if not self.options["tls_verify"]:
                query += "&no_verify_ssl=1"
        vhost = quote(self.vhost, safe="")
        return (
            f"{self.scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@"
            f"{self.host}:{self.port}/{vhost}?{query}"
        )

    def safe_url(self) -> str:
        """The server address with the password masked."""
        return (
            f"{self.scheme}://{self.user}:***@{self.host}:{self.port}/{quote(self.vhost, safe='')}"
        )


def parse_settings(url: str | None, keywords: dict[str, Any]) -> AmqpSettings:
    """Read ``amqp[s]://[user[:password]@]host[:port][/vhost][?options]`` plus keywords."""
    url = url or "amqp://localhost"
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(
            f"an AMQP URL starts with amqp:// or amqps://, got {mask_url(url)!r}", key="url"
        )
    options = OPTIONS.read(url, keywords)
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError as exc:
        raise ConfigurationError(f"bad port in {mask_url(url)!r}: {exc}", key="url") from None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = unquote(path) if path else "/"
    user = options["user"] or (unquote(parts.username) if parts.username else "guest")
    password = options["password"] or (unquote(parts.password) if parts.password else "guest")
    return AmqpSettings(
        scheme=parts.scheme,
        host=parts.hostname or "localhost",
        port=port,
        vhost=vhost,
        user=user,
        password=password,
        options=options,
    )
