"""Shared fixtures of the eventforge-redis tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eventforge.testing.brokers import RedisServer


@pytest.fixture
def make_redis(redis_server: RedisServer) -> Iterator[Callable[..., object]]:
    """Make RedisTransports on the session server; all closed after the test."""
    from eventforge_redis import RedisTransport

    made: list[RedisTransport] = []

    def make(**options: object) -> RedisTransport:
        transport = RedisTransport.from_url(redis_server.url, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def limited_user() -> Callable[[RedisServer], str]:
    """Give a private server an ACL user ``limited`` allowed only channels ``allowed.*``;
    return the URL that logs in as it."""
    import subprocess

    def make(server: RedisServer) -> str:
        subprocess.run(
            ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", "limited", "on",
             ">limitedpw", "~*", "resetchannels", "&allowed.*", "+@all"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return f"redis://limited:limitedpw@127.0.0.1:{server.port}/0"

    return make
