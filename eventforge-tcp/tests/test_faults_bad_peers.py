"""A server survives bad peers: bad frames, silent peers, floods and readers that stop reading.

Each test speaks raw bytes to a real server, checks that the offender is disconnected and
counted, and that a well-behaved client is still served afterwards.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.conformance import Collector
from eventforge_tcp.framing import encode_frame
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import HELLO, raw_connect, stuck_subscriber, wait_closed, wait_until


def assert_still_serving(server: TCPServerTransport) -> None:
    """A fresh client publishes and receives through the server."""
    with TCPClientTransport("127.0.0.1", server.port).connect() as client:
        got = Collector()
        client.subscribe("health.check", got)
        server.send(Message("health.check", "ok"))
        assert got.wait_for_count(1, 5.0), "the server stopped serving other clients"


def _envelope(payload: bytes) -> bytes:
    return b'{"version":1,"id":"x1","topic":"a.b","payload":' + payload + b"}"


BAD_FRAMES = {
    "oversize-header": b"\xff\xff\xff\xff",
    "oversize-by-one": (1024 * 1024 + 1).to_bytes(4, "big") + b"{",
    "zero-length": b"\x00\x00\x00\x00",
    "non-json": encode_frame(b"\x00\x01 definitely not json"),
    "wrong-schema": encode_frame(b'{"version":1,"id":7,"topic":["a"],"payload":1}'),
    "unknown-version": encode_frame(b'{"version":9,"id":"x","topic":"a","payload":1}'),
    "huge-integer": encode_frame(_envelope(b"9" * 100_000)),
    "deeply-nested": encode_frame(_envelope(b"[" * 100_000 + b"]" * 100_000)),
    "invalid-utf8": encode_frame(_envelope(b'"\xc3\x28"')),
    "unknown-control": encode_frame(b'{"version":1,"id":"x","topic":"$tcp.nope","payload":1}'),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_closes_only_the_offender(server: TCPServerTransport, name: str) -> None:
    """Malformed input after the hello: rejected, counted, connection closed with a reason."""
    bystander = TCPClientTransport("127.0.0.1", server.port).connect()
    try:
        sock = raw_connect(server.port)
        sock.sendall(BAD_FRAMES[name])
        reply = wait_closed(sock)
        sock.close()
        assert b"$tcp.error" in reply, "the server closed without saying why"
        assert server.stats()["protocol_errors"] == 1
        got = Collector()
        bystander.subscribe("still.here", got)
        server.send(Message("still.here", 1))
        assert got.wait_for_count(1, 5.0), "a connected bystander lost service"
        assert_still_serving(server)
    finally:
        bystander.close()


def test_truncated_frame_then_eof_is_counted(server: TCPServerTransport) -> None:
    sock = raw_connect(server.port)
    sock.sendall((100).to_bytes(4, "big") + b'{"version":1')
    sock.shutdown(socket.SHUT_WR)
    wait_closed(sock)
    sock.close()
    assert wait_until(lambda: server.stats()["protocol_errors"] == 1)
    assert_still_serving(server)


def test_garbage_instead_of_hello_is_refused(server: TCPServerTransport) -> None:
    """An HTTP request (or any non-eventforge client) is refused at the hello."""
    sock = raw_connect(server.port, hello=False)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_closed(sock)
    sock.close()
    assert wait_until(lambda: server.stats()["protocol_errors"] == 1)
    assert_still_serving(server)


def test_peer_that_never_says_hello_is_closed() -> None:
    """Slowloris: a connection that sends nothing is closed at the hello deadline."""
    srv = TCPServerTransport("127.0.0.1", 0, hello_timeout=0.3).start()
    try:
        sock = raw_connect(srv.port, hello=False)
        sock.sendall(HELLO[:3])  # one byte at a time would do the same
        assert wait_closed(sock) == b""
        sock.close()
        assert srv.stats()["hello_timeouts"] == 1
        assert_still_serving(srv)
    finally:
        srv.close()


def test_silent_peer_is_detected_by_heartbeat() -> None:
    """A peer that completes the hello then never answers pings (half-open) is closed."""
    srv = TCPServerTransport("127.0.0.1", 0, heartbeat_interval=0.1, heartbeat_timeout=0.4).start()
    try:
        sock = raw_connect(srv.port)
        received = wait_closed(sock)  # we read, but never answer
        sock.close()
        assert b"$tcp.ping" in received, "the server never pinged the idle peer"
        assert srv.stats()["heartbeat_timeouts"] == 1
    finally:
        srv.close()


def test_client_answers_pings_and_stays_connected() -> None:
    """A live client answers heartbeats: no heartbeat timeout however long it idles."""
    srv = TCPServerTransport("127.0.0.1", 0, heartbeat_interval=0.05, heartbeat_timeout=0.3).start()
    try:
        client = TCPClientTransport(
            "127.0.0.1", srv.port, heartbeat_interval=0.05, heartbeat_timeout=0.3
        ).connect()
        got = Collector()
        client.subscribe("later", got)
        # Idle for several heartbeat timeouts, measured by pings actually exchanged.
        assert wait_until(lambda: srv.stats()["received"] == 0 and client.stats()["received"] == 0)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        srv.send(Message("later", "still connected"))
        assert got.wait_for_count(1, 5.0)
        assert srv.stats()["heartbeat_timeouts"] == 0
        assert client.stats()["reconnects"] == 0
        client.close()
    finally:
        srv.close()


def test_connection_cap_refuses_extra_clients() -> None:
    srv = TCPServerTransport("127.0.0.1", 0, max_connections=2).start()
    clients = [TCPClientTransport("127.0.0.1", srv.port).connect() for _ in range(2)]
    try:
        assert wait_until(lambda: srv.stats()["connections"] == 2)
        extra = TCPClientTransport("127.0.0.1", srv.port)
        with pytest.raises(TransportError, match="max_connections"):
            extra.connect()
        assert srv.stats()["connections_refused"] == 1
        clients.pop().close()
        assert wait_until(lambda: srv.stats()["connections"] == 1)
        clients.append(TCPClientTransport("127.0.0.1", srv.port).connect())
    finally:
        for client in clients:
            client.close()
        srv.close()


def test_reader_that_stops_reading_is_bounded_and_disconnected() -> None:
    """A subscriber that never reads: its buffer stays bounded, it is cut off after the write
    deadline and what it never got is counted; the publisher is held back, not the others."""
    limit = 256 * 1024
    srv = TCPServerTransport(
        "127.0.0.1", 0, max_frame_size=16 * 1024, max_send_buffer=limit, write_deadline=0.5
    ).start()
    healthy = TCPClientTransport("127.0.0.1", srv.port).connect()
    try:
        sock = stuck_subscriber(srv, "flood")
        got = Collector()
        healthy.subscribe("flood", got)
        payload = "x" * 8000
        sent = 0
        peak = 0
        while srv.stats()["disconnects_slow_peer"] == 0 and sent < 50_000:
            srv.send(Message("flood", payload))
            sent += 1
            peak = max(peak, max((lk.out_size for lk in list(srv._io.links.values())), default=0))
        stats = srv.stats()
        assert stats["disconnects_slow_peer"] == 1
        assert stats["frames_lost_on_disconnect"] > 0, "what the stuck peer never got is counted"
        assert peak <= limit, f"send buffer grew to {peak} bytes past its bound {limit}"
        assert got.wait_for_count(sent, 20.0), "the healthy subscriber missed messages"
        sock.close()
    finally:
        healthy.close()
        srv.close()


def test_oversize_send_is_refused_before_it_leaves(
    make_client: Callable[..., TCPClientTransport],
) -> None:
    """The sender enforces max_frame_size too: a clear error, nothing sent."""
    from eventforge.errors import FrameTooLarge

    client = make_client()
    with pytest.raises(FrameTooLarge, match="max_frame_size"):
        client.send(Message("big", "x" * (1024 * 1024 + 10)))
    assert client.stats()["sent"] == 0


def test_reserved_topics_cannot_be_published(
    make_client: Callable[..., TCPClientTransport],
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        make_client().send(Message("$tcp.ping", None))


def test_thread_count_is_stable_across_connect_close(server: TCPServerTransport) -> None:
    """Clients leave no threads behind."""
    before = threading.active_count()
    for _ in range(5):
        TCPClientTransport("127.0.0.1", server.port).connect().close()
    assert threading.active_count() == before


def test_forwarding_to_a_stuck_client_drops_counted_and_spares_the_publisher() -> None:
    """Client to client through the server: a subscriber that never reads loses messages
    (counted in dropped_slow_peer) and is cut off; the publishing client is never blocked."""
    srv = TCPServerTransport(
        "127.0.0.1", 0, max_frame_size=16 * 1024, max_send_buffer=128 * 1024, write_deadline=0.5
    ).start()
    publisher = TCPClientTransport("127.0.0.1", srv.port).connect()
    try:
        sock = stuck_subscriber(srv, "fwd")
        sent = 0
        while srv.stats()["disconnects_slow_peer"] == 0 and sent < 100_000:
            publisher.send(Message("fwd", "y" * 4000))
            sent += 1
        stats = srv.stats()
        assert stats["dropped_slow_peer"] > 0
        assert stats["disconnects_slow_peer"] == 1
        sock.close()
        assert_still_serving(srv)
    finally:
        publisher.close()
        srv.close()


def test_client_adopts_a_smaller_server_frame_limit() -> None:
    """The welcome announces the server's max_frame_size; the client refuses bigger messages
    itself (FrameTooLarge) instead of getting disconnected for them."""
    from eventforge.errors import FrameTooLarge

    srv = TCPServerTransport("127.0.0.1", 0, max_frame_size=1024, max_send_buffer=65536).start()
    client = TCPClientTransport("127.0.0.1", srv.port).connect()
    try:
        with pytest.raises(FrameTooLarge):
            client.send(Message("big", "z" * 2000))
        got = Collector()
        srv.subscribe("small", got)
        client.send(Message("small", "fits"))
        assert got.wait_for_count(1, 5.0)
        assert client.stats()["reconnects"] == 0
    finally:
        client.close()
        srv.close()


def test_unreachable_server_fails_at_connect_leaving_no_thread() -> None:
    """Row 19: a wrong address fails within the connect timeout, with no retry thread behind."""
    from eventforge.testing.brokers import free_port

    before = threading.active_count()
    client = TCPClientTransport("127.0.0.1", free_port(), connect_timeout=1.0)
    with pytest.raises(TransportError, match="cannot connect"):
        client.connect()
    assert threading.active_count() == before
    with pytest.raises(TransportError, match="connect"):
        client.send(Message("x", 1))
    client.close()


def test_slow_handler_pushes_back_on_the_sender_without_loss() -> None:
    """Row 9, receiving side: a blocked handler makes the server stop reading once max_pending
    deliveries wait; TCP then holds the publisher back. Memory stays bounded, nothing is lost."""
    srv = TCPServerTransport("127.0.0.1", 0, max_pending=100).start()
    gate = threading.Event()
    got: list[int] = []

    def slow(message: Message) -> None:
        gate.wait(30)
        got.append(message.payload["n"])

    srv.subscribe("backlog", slow)
    client = TCPClientTransport("127.0.0.1", srv.port, max_send_buffer=1024 * 1024).connect()
    total = 60_000  # 12 MB: more than the kernel's socket buffers can absorb
    done = threading.Event()

    def publish() -> None:
        for n in range(total):
            client.send(Message("backlog", {"n": n, "pad": "q" * 200}))
        done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        peak = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not done.is_set():
            peak = max(peak, srv.stats()["pending_deliveries"])
            time.sleep(0.01)
        assert not done.is_set(), "the publisher was never held back"
        assert srv._io.reads_paused
        # One read may overshoot the limit by the frames it carried (a 256 KiB read).
        assert peak <= 100 + 256 * 1024 // 200
        gate.set()
        publisher.join(30)
        assert done.is_set()
        assert wait_until(lambda: len(got) == total, 30.0)
        assert got == list(range(total))
        assert srv.stats()["dropped_slow_peer"] == 0
    finally:
        gate.set()
        client.close()
        srv.close()
