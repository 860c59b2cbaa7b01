"""The private broker fixtures start real servers that answer, and stop them."""

from __future__ import annotations

import socket

from eventforge.testing.brokers import NatsServer, RedisServer, _roundtrip


def test_redis_server_answers_ping_and_stops(redis_server_factory):
    server = redis_server_factory()
    assert _roundtrip(server.port, b"PING\r\n", b"+PONG")
    server.stop()
    assert server.process is not None
    assert server.process.poll() is not None


def test_nats_server_sends_info_with_jetstream_and_stops(nats_server_factory):
    server = nats_server_factory()
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        info = sock.recv(4096)
    assert info.startswith(b"INFO ")
    assert b'"jetstream":true' in info.replace(b" ", b"")
    server.stop()
    assert server.process is not None
    assert server.process.poll() is not None


def test_restart_keeps_port(redis_server_factory):
    server: RedisServer = redis_server_factory(appendonly=True)
    port = server.port
    server.restart()
    assert server.port == port
    assert _roundtrip(port, b"PING\r\n", b"+PONG")


def test_session_fixtures(redis_server: RedisServer, nats_server: NatsServer):
    assert redis_server.url.startswith("redis://127.0.0.1:")
    assert nats_server.url.startswith("nats://127.0.0.1:")
