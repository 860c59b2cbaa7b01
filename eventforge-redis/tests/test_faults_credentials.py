"""R-PS / R-ST row 15: wrong credentials and ACL NOPERM give clear errors, not silent retries."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer

pytestmark = pytest.mark.broker

SECRET = "s3cret-pw-do-not-log"


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("eventforge-redis")}


def test_wrong_password_fails_at_construction_without_leaking_it(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A wrong password raises RedisAuthError once, says what to check, names no secret, and
    leaves no background thread retrying."""
    from eventforge_redis import RedisAuthError, RedisTransport

    server = redis_server_factory(password=SECRET)
    before = _threads()
    wrong = "wrong-" + SECRET
    import redis

    admin = redis.Redis(port=server.port, password=SECRET)
    connections = int(admin.info("stats")["total_connections_received"])
    with pytest.raises(RedisAuthError) as info:
        RedisTransport.from_url(f"redis://:{wrong}@127.0.0.1:{server.port}/0")
    time.sleep(0.5)  # a background retry loop would open more connections meanwhile
    attempts = int(admin.info("stats")["total_connections_received"]) - connections
    admin.close()
    text = str(info.value)
    print(f"connect_attempts={attempts} error={text!r}")
    assert attempts == 1
    assert "password" in text
    assert wrong not in text
    assert SECRET not in text
    assert _threads() == before
    # The right password works.
    RedisTransport.from_url(server.url).close()


def test_acl_noperm_on_publish_is_raised(
    redis_server_factory: Callable[..., RedisServer], limited_user: Callable[[RedisServer], str]
) -> None:
    """A user without access to a channel gets RedisPermissionError from flush/send, the
    refusal is counted, and publishing on allowed channels goes on."""
    from eventforge_redis import RedisPermissionError, RedisTransport

    server = redis_server_factory()
    url = limited_user(server)
    transport = RedisTransport.from_url(url)
    try:
        got: list[object] = []
        transport.subscribe("allowed.x", lambda m: got.append(m.payload))
        transport.send(Message("denied.x", 1))
        with pytest.raises(RedisPermissionError) as info:
            transport.flush(10)
        print(f"errors_surfaced={type(info.value).__name__}: {info.value}")
        assert "ACL" in str(info.value)
        assert "limitedpw" not in str(info.value)
        assert transport.stats()["publish_errors"] == 1
        transport.send(Message("allowed.x", 2))
        deadline = time.monotonic() + 20
        while 2 not in got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [2]
    finally:
        transport.close()


def test_acl_user_without_stream_commands_fails_when_opening_a_work_queue(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """NOPERM for XGROUP/XADD surfaces when the work queue is opened, with the ACL hint."""
    from eventforge.workqueue import RetryPolicy
    from eventforge_redis import RedisPermissionError, RedisTransport

    server = redis_server_factory()
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", "nostreams", "on", ">pw",
         "~*", "&*", "+@all", "-@stream"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    transport = RedisTransport.from_url(f"redis://nostreams:pw@127.0.0.1:{server.port}/0")
    try:
        with pytest.raises(RedisPermissionError) as info:
            transport.work_queue_backend(f"q{os.urandom(3).hex()}", RetryPolicy())
        assert "ACL SETUSER" in str(info.value)
    finally:
        transport.close()


def test_acl_noperm_on_subscribe_is_raised(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Subscribing to a channel the user may not read raises at once; the link stays up."""
    from eventforge_redis import RedisPermissionError, RedisTransport

    server = redis_server_factory()
    subprocess.run(
        ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", "reader", "on", ">pw",
         "~*", "resetchannels", "&allowed.*", "+@all"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    transport = RedisTransport.from_url(f"redis://reader:pw@127.0.0.1:{server.port}/0")
    try:
        with pytest.raises(RedisPermissionError):
            transport.subscribe("denied.*", lambda m: None)
        got: list[object] = []
        transport.subscribe("allowed.y", lambda m: got.append(m.payload))
        transport.send(Message("allowed.y", 3))
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [3]
        stats = transport.stats()
        assert stats["subscribe_errors"] == 1
        assert stats["disconnects"] == 0
    finally:
        transport.close()


def test_publisher_stops_when_a_reconnect_is_refused(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Credentials refused on reconnect stop the writer thread (no retry loop) and every later
    publish raises the authentication error instead of "not connected"."""
    import redis
    from eventforge_redis import RedisAuthError, RedisTransport

    server = redis_server_factory(password="first-secret")
    transport = RedisTransport(host="127.0.0.1", port=server.port, password="first-secret")
    try:
        transport.send(Message("auth.t", 1))
        assert transport.flush(timeout=10)
        admin = redis.Redis(host="127.0.0.1", port=server.port, password="first-secret")
        admin.config_set("requirepass", "second-secret")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        admin.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and transport.stats()["publisher_state"] != "failed":
            with contextlib.suppress(Exception):  # the link is failing; errors are expected
                transport.send(Message("auth.t", 2))
            time.sleep(0.05)
        stats = transport.stats()
        assert stats["publisher_state"] == "failed", "the writer kept retrying refused credentials"
        assert not any(t.name == "eventforge-redis-publisher" and t.is_alive()
                       for t in threading.enumerate()), "the writer thread is still running"  # fmt: skip
        with pytest.raises(RedisAuthError):
            transport.send(Message("auth.t", 3))
        assert "second-secret" not in repr(transport)
    finally:
        transport.close()
