"""Construction, URLs, registration and lazy import of the redis transport."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from eventforge.errors import ConfigurationError, TransportError
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer, free_port


@pytest.mark.broker
def test_seed_keywords_and_seed_import_path(redis_server: RedisServer) -> None:
    """``from eventforge.transports.redis import RedisTransport``; ``RedisTransport(host=, port=)``."""
    from eventforge import MessageQueue
    from eventforge.transports.redis import RedisTransport

    transport = RedisTransport(host="127.0.0.1", port=redis_server.port)
    queue = MessageQueue(transport=transport)
    received: list[object] = []
    queue.subscribe("seed.t", lambda m: received.append(m.payload))
    queue.publish("seed.t", {"ok": True})
    transport.flush()
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == [{"ok": True}]
    assert "127.0.0.1" in repr(transport)
    queue.close()


def test_unreachable_server_fails_at_construction_and_leaves_no_thread() -> None:
    import threading

    from eventforge_redis import RedisTransport

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(TransportError) as info:
        RedisTransport(host="127.0.0.1", port=free_port(), socket_connect_timeout=1.0)
    assert "cannot reach" in str(info.value)
    assert {t.ident for t in threading.enumerate()} - before == set()


def test_bad_options_are_configuration_errors() -> None:
    from eventforge_redis import RedisTransport

    for options in ({"block": 0}, {"health_check_interval": -1}, {"key_prefix": "a b"}):
        with pytest.raises(ConfigurationError):
            RedisTransport(port=free_port(), **options)  # type: ignore[arg-type]


def test_plugin_listing_and_resolution_never_import_redis() -> None:
    """The plugin module and the registry describe the transport without importing redis."""
    code = textwrap.dedent(
        """
        import sys
        import eventforge_redis.plugin
        from eventforge import registry
        entry = registry().transport("rediss://example:6380/0")
        assert entry.spec.name == "redis", entry.spec
        assert "durable" in entry.spec.capabilities
        assert "redis" not in sys.modules, "redis was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.broker
def test_send_after_close_and_stats(make_redis: Callable[..., object]) -> None:
    from eventforge.errors import TransportClosedError

    transport = make_redis()
    transport.send(Message("stats.t", 1))  # type: ignore[attr-defined]
    transport.flush()  # type: ignore[attr-defined]
    assert transport.stats()["published"] == 1  # type: ignore[attr-defined]
    transport.close()  # type: ignore[attr-defined]
    with pytest.raises(TransportClosedError):
        transport.send(Message("stats.t", 2))  # type: ignore[attr-defined]


@pytest.mark.broker
def test_from_url_keyword_overrides_reach_the_connection(redis_server_factory) -> None:  # type: ignore[no-untyped-def]
    """``from_url(url, password=...)`` is used, not silently dropped."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory(password="pw-override")
    transport = RedisTransport.from_url(
        f"redis://127.0.0.1:{server.port}/0", password="pw-override"
    )
    assert transport.settings.password == "pw-override"
    transport.close()


@pytest.mark.broker
def test_transport_settings_are_accepted_in_the_url_as_in_keywords(
    redis_server: RedisServer,
) -> None:
    """``health_check_interval`` and the other transport settings may be URL query options."""
    from eventforge import connect
    from eventforge_redis import RedisTransport

    transport = connect(
        f"{redis_server.url}?health_check_interval=2.5&socket_timeout=3&block=0.5&claim_idle=9"
        "&key_prefix=app1&group_maxlen=500&max_pending=64"
    )
    assert isinstance(transport, RedisTransport)
    try:
        assert transport.health_check_interval == 2.5
        assert transport.settings.socket_timeout == 3.0
        assert (transport.block, transport.claim_idle, transport.key_prefix) == (0.5, 9.0, "app1")
    finally:
        transport.close()
    overridden = RedisTransport.from_url(
        f"{redis_server.url}?health_check_interval=2.5", health_check_interval=7
    )
    assert overridden.health_check_interval == 7.0  # keywords win over the URL
    overridden.close()
    for query, key in (("health_check_interval=soon", "health_check_interval"),
                       ("health_check_interval=0", "health_check_interval"),
                       ("group_maxlen=1.5", "group_maxlen")):  # fmt: skip
        with pytest.raises(ConfigurationError) as info:
            RedisTransport.from_url(f"{redis_server.url}?{query}")
        assert info.value.key == f"transport.{key}"
