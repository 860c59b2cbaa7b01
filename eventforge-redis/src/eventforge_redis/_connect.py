"""Connection settings and the redis-py objects built from them.

redis is imported here, and this module is imported only when a transport or backend is
created, so ``import eventforge`` and ``eventforge plugins`` never pull redis in. Every
connection pins the settings that matter (RELIABILITY §4): explicit socket timeouts (redis-py 8
lowered its defaults), RESP2, and no silent automatic retries, so errors surface where they
happen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from eventforge.errors import ConfigurationError, TransportError
from eventforge.transport.urls import mask_url

from ._options import CONNECTION_OPTIONS, OPTIONS, SSL_OPTIONS

__all__ = [
    "RedisAuthError",
    "RedisPermissionError",
    "RedisSettings",
    "describe_error",
    "import_redis",
    "is_fatal",
    "read_options",
]


class RedisAuthError(TransportError):
    """Redis refused the credentials (wrong password or unknown ACL user). Not retried."""


class RedisPermissionError(TransportError):
    """The ACL user may not run a command or reach a key / channel (NOPERM)."""


def import_redis() -> Any:
    """Import redis-py on first use, with a message that says what to install when it is absent."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - redis is a dependency of this package
        raise ImportError(
            "the redis transport needs the 'redis' package: pip install eventforge-redis"
        ) from exc
    return redis


@dataclass(frozen=True)
class RedisSettings:
    """Where and how to connect. ``password`` never appears in ``repr`` or error messages."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    ssl_options: dict[str, Any] = field(default_factory=dict)
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0
    client_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigurationError(
                f"port must be an int in 1..65535, got {self.port!r}", key="port"
            )
        if not isinstance(self.db, int) or self.db < 0:
            raise ConfigurationError(f"db must be an int >= 0, got {self.db!r}", key="db")
        for key in ("socket_timeout", "socket_connect_timeout"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{key} must be a positive number, got {value!r}", key=key)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisSettings:
        """Parse ``redis://[user[:password]@]host[:port][/db]`` or ``rediss://`` (TLS).

        The query may hold any option of :data:`~eventforge_redis._options.OPTIONS` (the
        transport's own are read and left to the transport); ``overrides`` are keyword options,
        ``host``, ``port``, ``ssl`` or ``ssl_options``, and win over the URL.
        """
        return read_options(url, overrides)[0]

    def with_timeout(self, socket_timeout: float) -> RedisSettings:
        """The same settings with another read timeout (blocking reads need a larger one)."""
        return replace(self, socket_timeout=socket_timeout)

    @property
    def address(self) -> str:
        """``host:port/db`` for messages (no credentials)."""
        return f"{self.host}:{self.port}/{self.db}"

    @property
    def url(self) -> str:
        """The server's URL with the password masked: ``redis[s]://[user[:***]@]host:port/db``."""
        user = quote(self.username, safe="") if self.username else ""
        if self.password is not None:
            user += ":***"
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{user + '@' if user else ''}{host}:{self.port}/{self.db}"

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py connection or client."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "client_name": self.client_name,
            "protocol": 2,
            "health_check_interval": 0,
        }
        return kwargs

    def connection(self, socket_timeout: float | None = None) -> Any:
        """A single unconnected redis-py connection (the caller owns it)."""
        redis = import_redis()
        kwargs = self.connection_kwargs()
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        kwargs["retry"] = _no_retry()
        if self.ssl:
            return redis.connection.SSLConnection(**kwargs, **self.ssl_options)
        return redis.connection.Connection(**kwargs)

    def client(self, socket_timeout: float | None = None, max_connections: int = 32) -> Any:
        """A thread-safe client that owns its connection pool: ``close()`` disconnects it.

        redis-py leaves a pool passed as ``connection_pool=`` open when the client closes (it
        may be shared); this pool is ours alone, so the client takes ownership of it the way
        ``Redis.from_pool`` does, and closing the client releases every socket it opened.
        """
        redis = import_redis()
        kwargs = self.connection_kwargs()
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        kwargs["retry"] = _no_retry()
        if self.ssl:
            kwargs["connection_class"] = redis.connection.SSLConnection
            kwargs.update(self.ssl_options)
        pool = redis.ConnectionPool(max_connections=max_connections, **kwargs)
        client = redis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True
        return client


def _no_retry() -> Any:
    redis = import_redis()
    return redis.retry.Retry(redis.backoff.NoBackoff(), 0)


def read_options(
    url: str | None, keywords: Mapping[str, Any]
) -> tuple[RedisSettings, dict[str, Any]]:
    """The connection settings and the transport's own options, from a URL and keywords.

    ``url`` (``None``: ``redis://localhost``) gives the address, TLS (``rediss://``), user,
    password and database; its query and ``keywords`` give the options of
    :data:`~eventforge_redis._options.OPTIONS`, keywords winning. ``keywords`` may also hold
    ``host``, ``port``, ``ssl`` and ``ssl_options`` (a dict handed to redis-py's TLS
    connection, under the ``ssl_*`` options). The transport's options come back with their
    defaults filled in.
    """
    text = url or "redis://localhost"
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(
            f"unsupported URL scheme {parts.scheme!r} in the Redis URL {mask_url(text)!r}; use "
            "redis:// or rediss:// (TLS)",
            key="url",
        )
    try:
        port = parts.port if parts.port is not None else 6379
    except ValueError as exc:
        raise ConfigurationError(
            f"bad port in the Redis URL {mask_url(text)!r}: {exc}", key="port"
        ) from None
    options = dict(keywords)
    address: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": port,
        "ssl": parts.scheme == "rediss",
        "ssl_options": {},
    }
    for key in address:
        if key in options:
            address[key] = options.pop(key)
    from_url: dict[str, Any] = {}
    if parts.username:
        from_url["username"] = unquote(parts.username)
    if parts.password is not None:
        from_url["password"] = unquote(parts.password)
    path = parts.path.strip("/")
    if path:
        try:
            from_url["db"] = int(path)
        except ValueError:
            raise ConfigurationError(
                f"the path of a Redis URL is the database number, got {path!r} in "
                f"{mask_url(text)!r}",
                key="transport.db",
            ) from None
    values = {
        **OPTIONS.defaults(),
        **from_url,
        **OPTIONS.from_query(text),
        **OPTIONS.from_keywords(options),
    }
    ssl_options = dict(address["ssl_options"] or {})
    ssl_options.update({k: values[k] for k in SSL_OPTIONS if values[k] is not None})
    settings = RedisSettings(
        host=address["host"],
        port=address["port"],
        db=values["db"],
        username=values["username"],
        password=values["password"],
        ssl=bool(address["ssl"]),
        ssl_options=ssl_options,
        socket_timeout=values["socket_timeout"],
        socket_connect_timeout=values["socket_connect_timeout"],
        client_name=values["client_name"],
    )
    return settings, {k: v for k, v in values.items() if k not in CONNECTION_OPTIONS}


def describe_error(exc: BaseException, settings: RedisSettings, doing: str) -> TransportError:
    """Turn a redis-py exception into our error that says what happened and what to do.

    Credentials never appear in the text: only the address and the user name.
    """
    redis = import_redis()
    user = f" as user {settings.username!r}" if settings.username else ""
    where = f"Redis at {settings.address}{user}"
    text = str(exc)
    if settings.password:
        with contextlib.suppress(Exception):
            text = text.replace(settings.password, "***")
    if isinstance(exc, redis.exceptions.AuthenticationError) or "WRONGPASS" in text:
        return RedisAuthError(
            f"{doing}: {where} rejected the credentials ({text}); check the password and the "
            "ACL user name. Not retrying"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or any(
        marker in text
        for marker in ("NOPERM", "no permissions", "The user executing the script can't")
    ):
        return RedisPermissionError(
            f"{doing}: {where} denied it by ACL ({text}); grant the user the command, key or "
            "channel (ACL SETUSER), or use another user"
        )
    if isinstance(exc, redis.exceptions.TimeoutError):
        return TransportError(
            f"{doing}: {where} did not answer within the socket timeout ({text}); is the server "
            "overloaded or paused?"
        )
    if isinstance(exc, redis.exceptions.ConnectionError):
        return TransportError(
            f"{doing}: cannot reach {where} ({text}); is redis-server running and reachable?"
        )
    return TransportError(f"{doing}: {where} answered with an error: {text}")


def is_fatal(exc: BaseException) -> bool:
    """Errors that retrying cannot fix (credentials, ACL)."""
    return isinstance(exc, (RedisAuthError, RedisPermissionError))
