"""What server and client share: where callbacks run, and which payloads are decoded at all.

Non-blocking callbacks (reply waiters, hand-offs to handler threads) run on the I/O thread.
That is what lets a handler on the delivery thread wait for a reply over TCP, and what takes a
thread hand-off out of every RPC round trip. Pickle payloads are refused unless trusted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from eventforge import Message, MessageQueue, RPCClient, RPCServer
from eventforge.testing.conformance import Collector
from eventforge.transport import Capability, nonblocking
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import stuck_subscriber


def test_tcp_declares_inline_nonblocking_callbacks(server: TCPServerTransport) -> None:
    assert server.has(Capability.NONBLOCKING_INLINE)


@pytest.mark.parametrize("asker", ["client", "server"])
def test_handler_on_the_delivery_thread_gets_the_reply_to_a_blocking_request(
    server: TCPServerTransport,
    make_client: Callable[..., TCPClientTransport],
    asker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    responder = MessageQueue(make_client(), name="responder")
    asking_transport = make_client() if asker == "client" else server
    asking = MessageQueue(asking_transport, name="asking", close_transport=False)
    responder.subscribe("answer", lambda m: responder.reply(m, m.payload * 2))
    outcome: list[object] = []
    done = threading.Event()

    def handler(message: Message) -> None:  # runs on the transport's delivery thread
        reply = asking.request("answer", message.payload, timeout=10)
        outcome.append(threading.current_thread().name)
        outcome.append(reply.payload if reply is not None else None)
        done.set()

    asking.subscribe("ask", handler)
    with caplog.at_level(logging.WARNING, logger="eventforge.queue"):
        asking.publish("ask", 21)
        assert done.wait(10)
    assert "delivery" in str(outcome[0])
    assert outcome[1] == 42
    assert "delivery thread" not in caplog.text
    asking.close()
    responder.close()


def test_inline_rpc_server_may_make_nested_calls_over_tcp(
    server: TCPServerTransport, make_client: Callable[..., TCPClientTransport]
) -> None:
    inner_queue = MessageQueue(make_client())
    inner = RPCServer(inner_queue, service_name="inner")
    inner.add_method("double", lambda x: x * 2)
    inner.serve(blocking=False)
    outer_queue = MessageQueue(make_client())
    inner_client = RPCClient(outer_queue, service_name="inner", timeout=10)
    outer = RPCServer(outer_queue, service_name="outer", threaded=False)
    outer.add_method("quadruple", lambda x: inner_client.double(inner_client.double(x)))
    outer.serve(blocking=False)
    caller = MessageQueue(make_client())
    assert RPCClient(caller, service_name="outer", timeout=10).quadruple(3) == 12
    for q in (caller, outer_queue, inner_queue):
        q.close()


def test_inline_callbacks_are_isolated_and_counted(
    server: TCPServerTransport, make_client: Callable[..., TCPClientTransport]
) -> None:
    client = make_client()
    got: list[str] = []
    arrived = threading.Event()

    @nonblocking
    def explodes(message: Message) -> None:
        raise RuntimeError("boom")

    @nonblocking
    def keeps(message: Message) -> None:
        got.append(threading.current_thread().name)
        arrived.set()

    for transport in (client, server):
        transport.subscribe("x.*", explodes)
        transport.subscribe("x.*", keeps)
    before = {t: t.stats() for t in (client, server)}
    publisher = make_client()
    publisher.send(Message("x.y", 1))
    assert arrived.wait(10)

    def settled() -> bool:
        return all(t.stats()["delivered"] - before[t]["delivered"] >= 1 for t in (client, server))

    deadline = threading.Event()
    for _ in range(200):
        if settled() and len(got) == 2:
            break
        deadline.wait(0.02)
    assert len(got) == 2
    assert all("-io" in name for name in got)  # on each transport's I/O thread
    for t in (client, server):
        stats = t.stats()
        assert stats["callback_errors"] - before[t]["callback_errors"] == 1
        assert stats["delivered"] - before[t]["delivered"] == 1


def test_coroutine_handlers_do_not_wait_behind_a_busy_delivery_thread(
    server: TCPServerTransport, make_client: Callable[..., TCPClientTransport]
) -> None:
    queue = MessageQueue(make_client())
    release = threading.Event()
    fast_seen = threading.Event()

    def slow(message: Message) -> None:  # holds the delivery thread
        release.wait(10)

    async def fast(message: Message) -> None:
        fast_seen.set()

    queue.subscribe("slow", slow)
    queue.subscribe("fast", fast)
    publisher = MessageQueue(make_client())
    publisher.publish("slow")
    publisher.publish("fast")
    try:
        # Scheduled from the I/O thread, the coroutine runs while ``slow`` still blocks.
        assert fast_seen.wait(10)
    finally:
        release.set()
    publisher.close()
    queue.close()


def test_a_send_from_the_io_thread_never_waits_for_a_stuck_peer() -> None:
    """A non-blocking callback that sends (an RPC server refusing a call when its backlog is
    full does) runs on the I/O thread: toward a peer whose buffer is full the message is
    dropped and counted at once instead of stalling the thread that makes room."""
    srv = TCPServerTransport(
        "127.0.0.1", 0, max_frame_size=16 * 1024, max_send_buffer=128 * 1024, write_deadline=60
    ).start()
    client = TCPClientTransport("127.0.0.1", srv.port).connect()
    sock = stuck_subscriber(srv, "fwd")
    try:
        floods = threading.Event()

        @nonblocking
        def flood(message: Message) -> None:  # on the server's I/O thread
            for _ in range(200):
                srv.send(Message("fwd", "y" * 4000))
            floods.set()

        srv.subscribe("trigger", flood)
        client.send(Message("trigger", None))
        assert floods.wait(10)
        assert srv.stats()["dropped_slow_peer"] > 0
        # The I/O thread is free: a round trip through it completes (the write deadline that
        # would otherwise end a wait is a minute away).
        echoed = threading.Event()
        client.subscribe("pong", lambda m: echoed.set())
        publisher = MessageQueue(TCPClientTransport("127.0.0.1", srv.port).connect())
        try:
            publisher.publish("pong")
            assert echoed.wait(10)
        finally:
            publisher.close()
    finally:
        sock.close()
        client.close()
        srv.close()


def test_a_client_send_from_its_io_thread_drops_and_counts_when_the_server_reads_nothing() -> None:
    """The client side of the rule above: with its buffer to a server that stopped reading
    full, a non-blocking callback sending from the client's I/O thread drops (counted, one
    warning) instead of raising a traceback per message or waiting."""
    from eventforge.errors import TransportError

    release = threading.Event()
    srv = TCPServerTransport("127.0.0.1", 0, max_pending=1).start()
    client = TCPClientTransport(
        "127.0.0.1", srv.port, max_frame_size=16 * 1024, max_send_buffer=64 * 1024,
        send_timeout=0.2,
    ).connect()  # fmt: skip
    try:
        flooded = threading.Event()
        pong = threading.Event()

        @nonblocking
        def flood(message: Message) -> None:  # on the client's I/O thread
            for _ in range(50):
                client.send(Message("sink", "z" * 4000))
            flooded.set()

        client.subscribe("trigger", flood)
        client.subscribe("pong", lambda m: pong.set())
        srv.subscribe("sink", lambda m: release.wait(20))  # the server stops reading
        full = None
        for _ in range(100_000):
            try:
                client.send(Message("sink", "z" * 4000))
            except TransportError as exc:
                full = exc
                break
        assert full is not None
        assert "stayed full" in str(full)
        srv.send(Message("trigger", None))
        assert flooded.wait(10)
        stats = client.stats()
        assert stats["dropped_slow_peer"] >= 50
        assert stats["callback_errors"] == 0
        srv.send(Message("pong", None))  # the client's I/O thread is still serving
        assert pong.wait(10)
    finally:
        release.set()
        client.close()
        srv.close()


# -- pickle --------------------------------------------------------------------------------


def test_pickle_payload_is_refused_and_never_unpickled(monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrusted server rejects a pickle payload without ever calling pickle.loads."""
    import pickle

    calls: list[bytes] = []
    real_loads = pickle.loads
    monkeypatch.setattr(
        pickle, "loads", lambda data, *a, **k: calls.append(data) or real_loads(data)
    )
    srv = TCPServerTransport("127.0.0.1", 0).start()
    try:
        got = Collector()
        srv.subscribe("objects", got)
        sender = TCPClientTransport(
            "127.0.0.1", srv.port, serializer="pickle", reconnect=False
        ).connect()
        sender.send(Message("objects", {"x": 1}))
        collector = Collector()
        assert collector.wait_for(lambda c: srv.stats()["protocol_errors"] == 1, 5.0)
        assert calls == [], "pickle.loads was called on untrusted bytes"
        assert len(got) == 0
        sender.close()
    finally:
        srv.close()


def test_pickle_payload_is_accepted_when_trusted() -> None:
    srv = TCPServerTransport("127.0.0.1", 0, serializer="pickle", trusted=True).start()
    try:
        got = Collector()
        srv.subscribe("objects", got)
        sender = TCPClientTransport(
            "127.0.0.1", srv.port, serializer="pickle", trusted=True
        ).connect()
        sender.send(Message("objects", {"x": (1, 2)}))
        assert got.wait_for_count(1, 5.0)
        assert got.messages[0].payload == {"x": (1, 2)}
        sender.close()
    finally:
        srv.close()
