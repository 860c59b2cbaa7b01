"""Counted publishes over TCP: the server and its clients tell how many receivers took a message.

A real server on a free loopback port, clients in this process (one in a child process). The
counts feed ``MessageQueue(unroutable=...)``: drop counts, return raises, reroute delivers on
the alternate topic, and a message a plain or group subscriber takes (on the server or on a
client) is not unroutable.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.queue._routing import REROUTED_FROM_HEADER, UnroutableError
from eventforge.testing.conformance import Collector
from eventforge_tcp._control import COUNT, PING, control_frame
from eventforge_tcp.framing import FrameDecoder, encode_json_frame
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import raw_connect, wait_closed, wait_until

Client = Callable[..., TCPClientTransport]


def test_server_counts_local_subscriptions_forwarded_connections_and_groups(
    server: TCPServerTransport, make_client: Client
) -> None:
    assert server.send_counted(Message("nobody.here", 0)) == 0
    a, b = make_client(), make_client()
    got_a, got_b, got_local = Collector(), Collector(), Collector()
    a.subscribe("orders.*", got_a)
    a.subscribe("orders.**", got_a)  # a second match on the same connection: one forward
    b.subscribe("orders.created", got_b)
    server.subscribe("orders.created", got_local)
    assert server.send_counted(Message("orders.created", 1)) == 3  # local + a + b
    grouped = Collector()
    a.subscribe("jobs.run", grouped, group="workers")
    b.subscribe("jobs.run", grouped, group="workers")
    assert server.send_counted(Message("jobs.run", 2)) == 1  # one member of the group
    assert wait_until(lambda: len(grouped) == 1 and len(got_a) == 2 and len(got_b) == 1)
    assert len(got_local) == 1
    both = Collector()
    c = make_client()
    c.subscribe("mixed.topic", both)
    c.subscribe("mixed.topic", both, group="solo")
    assert server.send_counted(Message("mixed.topic", 3)) == 2  # one forward + one group
    assert wait_until(lambda: len(both) == 2)


def test_client_counts_its_own_subscriptions_and_what_the_server_reports(
    server: TCPServerTransport, make_client: Client
) -> None:
    publisher, other = make_client(), make_client()
    assert publisher.send_counted(Message("nobody.here", 0)) == 0
    own, remote, local, grouped = Collector(), Collector(), Collector(), Collector()
    publisher.subscribe("a.own", own)
    assert publisher.send_counted(Message("a.own", 1)) == 1
    other.subscribe("a.remote", remote)
    assert publisher.send_counted(Message("a.remote", 2)) == 1
    server.subscribe("a.local", local)
    assert publisher.send_counted(Message("a.local", 3)) == 1
    publisher.subscribe("a.group", grouped, group="g")  # the group's only member is the publisher
    assert publisher.send_counted(Message("a.group", 4)) == 1
    assert wait_until(lambda: len(own) == len(remote) == len(local) == len(grouped) == 1)


def test_counted_publish_keeps_its_place_after_earlier_sends(
    server: TCPServerTransport, make_client: Client
) -> None:
    publisher, subscriber = make_client(), make_client()
    got = Collector()
    subscriber.subscribe("seq.n", got)
    for n in range(200):
        publisher.send(Message("seq.n", n))
    assert publisher.send_counted(Message("seq.n", 200)) == 1
    assert wait_until(lambda: len(got) == 201)
    assert [m.payload for m in got.messages] == list(range(201))


def test_queue_policies_over_tcp(server: TCPServerTransport, make_client: Client) -> None:
    listener = MessageQueue(make_client())
    dropping = MessageQueue(make_client(), unroutable="drop")
    strict = MessageQueue(make_client(), unroutable="return")
    rerouting = MessageQueue(make_client(), unroutable="reroute:parking")
    on_server = MessageQueue(server, unroutable="return")
    queues = (dropping, strict, rerouting, on_server)
    try:
        dropping.publish("nobody.listens", 1)
        with pytest.raises(UnroutableError):
            strict.publish("nobody.listens", 2)
        with pytest.raises(UnroutableError):
            on_server.publish("nobody.listens", 3)
        parked: list[Message] = []
        listener.subscribe("parking", parked.append)
        rerouting.publish("nobody.listens", 4)

        taken: list[Any] = []
        listener.subscribe("plain", lambda m: taken.append(m.payload))
        listener.subscribe("grouped", lambda m: taken.append(m.payload), group="g")
        server.subscribe("local.plain", lambda m: taken.append(m.payload))
        server.subscribe("local.grouped", lambda m: taken.append(m.payload), group="g")
        for queue in queues:
            for topic in ("plain", "grouped", "local.plain", "local.grouped"):
                queue.publish(topic, topic)
        assert wait_until(lambda: len(parked) == 1 and len(taken) == 16)
        assert [(m.payload, m.headers[REROUTED_FROM_HEADER]) for m in parked] == [
            (4, "nobody.listens")
        ]
        assert [q.stats["unroutable"] for q in queues] == [1, 1, 1, 1]
    finally:
        for queue in (*queues, listener):
            queue.close()


def test_counted_publish_while_disconnected_raises_and_sends_nothing(
    server: TCPServerTransport, make_client: Client
) -> None:
    with pytest.raises(TransportError, match="not connected"):
        TCPClientTransport("127.0.0.1", server.port).send_counted(Message("a.b", 1))
    client = make_client(reconnect_delay=0.05)
    port = server.port
    server.close()
    assert wait_until(lambda: not client.connected)
    with pytest.raises(TransportError, match="counted publish is not held"):
        client.send_counted(Message("a.b", 1))
    assert client.stats()["held_frames"] == 0
    revived = TCPServerTransport("127.0.0.1", port).start()
    try:
        got = Collector()
        revived.subscribe("a.b", got)
        assert wait_until(lambda: client.connected)
        assert client.send_counted(Message("a.b", 2)) == 1
        assert wait_until(lambda: len(got) == 1)
        assert got.messages[0].payload == 2
    finally:
        revived.close()


class _FakeServer:
    """Speaks just the hello; its welcome lists ``features``; records the frames it gets."""

    def __init__(self, features: list[str] | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.features = features
        self.topics: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        decoder = FrameDecoder()
        welcome: dict[str, Any] = {"welcome": "eventforge", "protocol": 1}
        if self.features is not None:
            welcome["features"] = self.features
        greeted = False
        with conn:
            while data := conn.recv(65536):
                for body in decoder.feed(data):
                    if not greeted:
                        conn.sendall(encode_json_frame(welcome))
                        greeted = True
                    else:
                        self.topics.append(json.loads(body)["topic"])

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[_FakeServer]:
    fake = _FakeServer(request.param)
    yield fake
    fake.close()


@pytest.mark.parametrize("fake_server", [None], indirect=True)
def test_a_server_without_counting_gets_a_plain_publish(
    fake_server: _FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    with TCPClientTransport("127.0.0.1", fake_server.port).connect() as client:
        assert client.send_counted(Message("old.server", 1)) is None
        assert wait_until(lambda: fake_server.topics == ["old.server"])
    assert "does not offer counted publishes" in caplog.text


@pytest.mark.parametrize("fake_server", [["count"]], indirect=True)
def test_no_count_within_the_timeout_raises(fake_server: _FakeServer) -> None:
    with TCPClientTransport("127.0.0.1", fake_server.port, count_timeout=0.2).connect() as client:
        with pytest.raises(TransportError, match="did not count message"):
            client.send_counted(Message("silent.server", 1))
    assert fake_server.topics[:2] == ["$tcp.count", "silent.server"]


def test_a_count_frame_must_be_followed_by_a_message(server: TCPServerTransport) -> None:
    sock = raw_connect(server.port)
    sock.sendall(control_frame(COUNT, None) + control_frame(PING, None))
    assert b"must be followed by a message" in wait_closed(sock)
    sock.close()


def test_counted_publish_from_another_process(
    server: TCPServerTransport, make_client: Client
) -> None:
    got = Collector()
    make_client().subscribe("cross.proc", got, group="g")
    script = textwrap.dedent(
        f"""
        from eventforge import MessageQueue
        from eventforge.queue._routing import UnroutableError
        from eventforge_tcp.transport import TCPClientTransport

        with MessageQueue(TCPClientTransport("127.0.0.1", {server.port}).connect(),
                          unroutable="return") as queue:
            queue.publish("cross.proc", "hello")
            try:
                queue.publish("cross.nobody", "lost")
            except UnroutableError:
                print("unroutable", queue.stats["unroutable"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "unroutable 1"
    assert wait_until(lambda: len(got) == 1)
    assert got.messages[0].payload == "hello"
