"""Client resilience: reconnect, resubscribe, offline publishing, RPC timeouts, a SIGKILLed server.

Fault figures (lost / duplicates / recover time) are printed in the one-line Jepsen style of
RELIABILITY.md; they are reported, never asserted, except what the at-most-once contract
promises: nothing delivered that was not sent, and delivery resumes after recovery.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from eventforge.errors import RPCTimeout, TransportError
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer
from eventforge.testing.brokers import free_port
from eventforge.testing.conformance import Collector
from eventforge.testing.history import History, StallWatchdog
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import wait_until

FAST = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.2}


def test_client_reconnects_and_restores_subscriptions() -> None:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    port = srv.port
    client = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    try:
        got = Collector()
        grouped = Collector()
        client.subscribe("restored.*", got)
        client.subscribe("restored.jobs", grouped, group="workers")
        srv.close()
        assert wait_until(lambda: not client.connected)
        srv = TCPServerTransport("127.0.0.1", port).start()
        assert wait_until(lambda: client.connected and srv.stats()["subscriptions"] == 2)
        srv.send(Message("restored.news", "after"))
        srv.send(Message("restored.jobs", "job"))
        assert got.wait_for(lambda c: "after" in c.payloads(), 5.0)
        assert grouped.wait_for(lambda c: c.payloads() == ["job"], 5.0)
        assert client.stats()["reconnects"] == 1
    finally:
        client.close()
        srv.close()


def test_offline_raise_mode_refuses_publishing_while_down() -> None:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    client = TCPClientTransport("127.0.0.1", srv.port, offline="raise", **FAST).connect()  # type: ignore[arg-type]
    try:
        srv.close()
        assert wait_until(lambda: not client.connected)
        with pytest.raises(TransportError, match="not connected"):
            client.send(Message("down", 1))
    finally:
        client.close()


def test_offline_buffer_mode_sends_held_messages_after_reconnect() -> None:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    port = srv.port
    client = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    try:
        srv.close()
        assert wait_until(lambda: not client.connected)
        for n in range(10):
            client.send(Message("held", n))
        assert client.stats()["held_frames"] == 10
        srv = TCPServerTransport("127.0.0.1", port)
        got = Collector()
        srv.subscribe("held", got)
        srv.start()
        assert got.wait_for_count(10, 10.0)
        assert got.payloads() == list(range(10)), "held messages must arrive once, in order"
    finally:
        client.close()
        srv.close()


def test_offline_buffer_full_raises_after_send_timeout() -> None:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    client = TCPClientTransport(
        "127.0.0.1",
        srv.port,
        max_frame_size=1024,
        max_send_buffer=4096,
        send_timeout=0.2,
        **FAST,  # type: ignore[arg-type]
    ).connect()
    try:
        srv.close()
        assert wait_until(lambda: not client.connected)
        payload = "x" * 500

        def fill() -> None:
            for n in range(100):
                client.send(Message("held", payload + str(n)))

        with pytest.raises(TransportError, match="offline buffer"):
            fill()
        assert client.stats()["held_frames"] <= 4096 // 500
    finally:
        client.close()


def test_pending_rpc_fails_with_timeout_when_the_server_dies() -> None:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    server_queue = MessageQueue(transport=srv)
    release = threading.Event()
    rpc = RPCServer(server_queue, service_name="slow")

    @rpc.register()
    def wait() -> str:
        release.wait(5)
        return "late"

    rpc.serve(blocking=False)
    caller = MessageQueue(transport=TCPClientTransport("127.0.0.1", srv.port, **FAST).connect())  # type: ignore[arg-type]
    client = RPCClient(caller, service_name="slow", timeout=0.5)
    try:
        result: list[BaseException] = []

        def call() -> None:
            try:
                client.call("wait")
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_until(lambda: srv.stats()["received"] >= 1)
        srv.close()
        thread.join(10)
        assert not thread.is_alive(), "the call hung"
        assert len(result) == 1
        assert isinstance(result[0], RPCTimeout)
        assert caller.pending_requests == 0
    finally:
        release.set()
        caller.close()
        server_queue.close()


SERVER_SCRIPT = """
import sys, threading
from eventforge_tcp.transport import TCPServerTransport
srv = TCPServerTransport("127.0.0.1", int(sys.argv[1])).start()
print("ready", flush=True)
threading.Event().wait()
"""


def _spawn_server(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"server process did not start: {line!r}"
    return proc


def test_server_sigkilled_mid_stream_and_restarted() -> None:
    """Row 1: kill -9 the hub while a publisher streams; restart it on the same port."""
    port = free_port()
    proc = _spawn_server(port)
    history = History()
    watchdog = StallWatchdog(history, stall_s=30.0)
    publisher = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    subscriber = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    unexpected: list[object] = []

    def on_message(message: Message) -> None:
        if isinstance(message.payload, int):
            history.delivered(message.payload)
        else:
            unexpected.append(message.payload)

    subscriber.subscribe("stream.seq", on_message)
    stop = threading.Event()
    seq = iter(range(10**9))
    restarted = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            n = next(seq)
            history.invoke(n)
            try:
                publisher.send(Message("stream.seq", n))
            except TransportError:
                history.publish_failed(n)
            else:
                history.published(n)
            time.sleep(0.0005)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        watchdog.wait_for(200, what="deliveries before the fault")
        history.fault_started()
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: not subscriber.connected, 10.0)
        history.fault_detected()
        proc = _spawn_server(port)
        history.fault_ended()
        restarted.set()
        before = history.unique_delivered()
        watchdog.wait_for(before + 500, what="deliveries after the restart")
    finally:
        stop.set()
        thread.join(10)
        publisher_stats = publisher.stats()
        publisher.close()
        subscriber.close()
        proc.kill()
        proc.wait(10)
    report = history.check()
    report.extra["reconnects"] = publisher_stats["reconnects"]
    print("\nTCP server SIGKILL:", report.summary())
    assert report.unexpected == 0
    assert not unexpected
    assert report.duplicates == 0, "at-most-once over one path never duplicates"
    assert report.recover_s is not None, "nothing was delivered after the restart"


def test_close_flushes_what_was_sent() -> None:
    """Row 21: everything send() accepted before close() leaves (the link is healthy)."""
    srv = TCPServerTransport("127.0.0.1", 0).start()
    got = Collector()
    srv.subscribe("flush.me", got)
    client = TCPClientTransport("127.0.0.1", srv.port).connect()
    try:
        for n in range(5000):
            client.send(Message("flush.me", {"n": n, "pad": "p" * 200}))
        client.close()
        assert got.wait_for_count(5000, 20.0)
        assert [m.payload["n"] for m in got.messages] == list(range(5000))
    finally:
        srv.close()


def test_many_subscriptions_are_restored_and_leave_no_residue() -> None:
    """Row 10: every subscription is announced again after a reconnect; unsubscribing all
    leaves the server with none."""
    count = 2000
    srv = TCPServerTransport("127.0.0.1", 0).start()
    port = srv.port
    client = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    try:
        ids = [client.subscribe(f"many.t{n}.*", lambda m: None) for n in range(count)]
        assert srv.stats()["subscriptions"] == count
        srv.close()
        assert wait_until(lambda: not client.connected)
        srv = TCPServerTransport("127.0.0.1", port).start()
        assert wait_until(lambda: srv.stats()["subscriptions"] == count, 20.0)
        got = Collector()
        client.unsubscribe(ids[7])
        client.subscribe("many.t7.x", got)
        srv.send(Message("many.t7.x", "once"))
        assert got.wait_for_count(1, 5.0)
        for sub_id in ids:
            client.unsubscribe(sub_id)
        assert wait_until(lambda: srv.stats()["subscriptions"] == 1)
        assert len(srv._router.index) == 1
    finally:
        client.close()
        srv.close()


def test_frozen_server_is_detected_and_the_client_recovers() -> None:
    """Row 7: SIGSTOP the server (a half-open link); the client's heartbeat notices, and after
    SIGCONT it reconnects and delivery resumes."""
    import signal

    port = free_port()
    proc = _spawn_server(port)
    client = TCPClientTransport(
        "127.0.0.1",
        port,
        heartbeat_interval=0.1,
        heartbeat_timeout=0.5,
        connect_timeout=0.5,
        **FAST,  # type: ignore[arg-type]
    ).connect()
    other = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    got = Collector()
    try:
        client.subscribe("after.freeze", got)
        proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: client.stats()["heartbeat_timeouts"] >= 1, 20.0)
        proc.send_signal(signal.SIGCONT)
        assert wait_until(lambda: client.connected, 20.0)

        def delivered() -> bool:
            other.send(Message("after.freeze", "hi"))
            return got.wait_for_count(1, 0.1)

        assert wait_until(delivered, 20.0)
        print("\nfrozen server:", client.stats())
    finally:
        client.close()
        other.close()
        proc.kill()
        proc.wait(10)


class _SlicingProxy:
    """A loopback TCP proxy that re-sends everything in chunks of 1 to 7 bytes (row 8)."""

    def __init__(self, target_port: int) -> None:
        import random
        import socket

        self._rng = random.Random(7)
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: object, dst: object) -> None:
        while True:
            try:
                data = src.recv(65536)  # type: ignore[attr-defined]
            except OSError:
                return
            if not data:
                return
            pos = 0
            while pos < len(data):
                step = self._rng.randint(1, 7)
                try:
                    dst.sendall(data[pos : pos + step])  # type: ignore[attr-defined]
                except OSError:
                    return
                pos += step

    def close(self) -> None:
        self._listener.close()
        for s in self._socks:
            s.close()


def test_tiny_tcp_segments_decode_intact_end_to_end() -> None:
    """Row 8: a proxy slices the byte stream into 1-7 byte segments both ways; every message
    and reply arrives intact, in order, with no protocol error."""
    srv = TCPServerTransport("127.0.0.1", 0).start()
    proxy = _SlicingProxy(srv.port)
    client = TCPClientTransport("127.0.0.1", proxy.port).connect()
    server_queue = MessageQueue(transport=srv)
    client_queue = MessageQueue(transport=client)
    try:
        got = Collector()
        client.subscribe("sliced.down", got)
        sent = [{"n": n, "text": "ünïcode ✓ " * (n % 5)} for n in range(200)]
        for payload in sent:
            srv.send(Message("sliced.down", payload, {"k": "v"}))
        assert got.wait_for_count(len(sent), 30.0)
        assert got.payloads() == sent
        rpc = RPCServer(server_queue, service_name="sliced")
        rpc.add_method("echo", lambda value: value)
        rpc.serve(blocking=False)
        caller = RPCClient(client_queue, service_name="sliced", timeout=10)
        assert [caller.call("echo", n) for n in range(20)] == list(range(20))
        assert srv.stats()["protocol_errors"] == 0
        assert client.stats()["protocol_errors"] == 0
    finally:
        client_queue.close()
        server_queue.close()
        proxy.close()
