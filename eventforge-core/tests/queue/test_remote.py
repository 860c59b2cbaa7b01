"""RemoteQueue: named peers over TCP; the seed's snippet runs as written (on a free port)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import eventforge.queue.remote as remote_module
import pytest
from eventforge import MessageQueue, RemoteQueue
from eventforge.errors import ConfigurationError, TransportClosedError
from eventforge.queue.remote import UnknownPeerError
from eventforge.testing.brokers import free_port
from eventforge.testing.conformance import Collector

pytest.importorskip("eventforge_tcp")

from eventforge.transports.tcp import TCPServerTransport

SEED_SNIPPET = """
from eventforge import MessageQueue, RemoteQueue
from eventforge.transports.tcp import TCPServerTransport

# --- Worker: RECEIVES, so it listens on a port and subscribes locally. ---
# (TCPServerTransport must be .start()ed before use.)
worker_srv = TCPServerTransport(host="0.0.0.0", port=9001)
worker_srv.start()
worker = RemoteQueue("worker-1", local=MessageQueue(transport=worker_srv))

@worker.on("work")
def run(msg):
    print(f"worker got: {msg.payload}")

# --- Coordinator: only SENDS, so it needs no local queue at all. ---
coord = RemoteQueue("coordinator")
coord.connect("worker-1", host="127.0.0.1", port=9001)  # own a TCP link by address
coord.send("worker-1", "work", {"task": 42})             # push to one peer
# -> worker got: {'task': 42}
coord.broadcast("work", {"task": 99})                    # push to ALL connected peers
print(coord.peers)                                       # ['worker-1']
"""


def test_seed_snippet_runs_as_written() -> None:
    """The seed's RemoteQueue example, with only the port substituted, prints what it says."""
    port = str(free_port())
    code = SEED_SNIPPET.replace("9001", port) + textwrap.dedent(
        """
        import time
        deadline = time.monotonic() + 10
        while worker.local.stats["delivered"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        coord.close()
        worker.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    # The worker prints from its delivery thread, the coordinator from the main thread, so the
    # lines may interleave; each must be there, each once.
    for expected in ("worker got: {'task': 42}", "worker got: {'task': 99}", "['worker-1']"):
        assert out.count(expected) == 1, out


@pytest.fixture
def node() -> RemoteQueue:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    rq = RemoteQueue("receiver", local=MessageQueue(transport=srv))
    yield rq
    rq.close()


def test_send_reaches_one_peer_with_source_header(node: RemoteQueue) -> None:
    got = Collector()
    node.subscribe("jobs.*", got)
    port = node.local.transport.port  # type: ignore[union-attr]
    with RemoteQueue("sender") as sender:
        sender.connect("receiver", "127.0.0.1", port)
        message_id = sender.send("receiver", "jobs.one", {"n": 1}, priority=2)
        assert got.wait_for_count(1, 5.0)
    received = got.messages[0]
    assert received.id == message_id
    assert received.payload == {"n": 1}
    assert received.headers == {"source_node": "sender", "priority": 2}


def test_broadcast_returns_one_id_per_peer() -> None:
    servers = [TCPServerTransport("127.0.0.1", 0).start() for _ in range(2)]
    nodes = [RemoteQueue(f"n{i}", local=MessageQueue(transport=s)) for i, s in enumerate(servers)]
    collectors = [Collector() for _ in nodes]
    for n, c in zip(nodes, collectors):
        n.on("all", c)
    sender = RemoteQueue("hub")
    try:
        for i, s in enumerate(servers):
            sender.connect(f"n{i}", "127.0.0.1", s.port)
        ids = sender.broadcast("all", "hello")
        assert sorted(ids) == ["n0", "n1"]
        for c, (peer, message_id) in zip(collectors, sorted(ids.items())):
            assert c.wait_for_count(1, 5.0)
            assert c.messages[0].id == message_id, peer
        assert sender.disconnect("n0") is True
        assert sender.disconnect("n0") is False
        assert sender.peers == ["n1"]
    finally:
        sender.close()
        for n in nodes:
            n.close()


def test_unknown_peer_lists_connected_peers(node: RemoteQueue) -> None:
    port = node.local.transport.port  # type: ignore[union-attr]
    with RemoteQueue("sender") as sender:
        sender.connect("receiver", "127.0.0.1", port)
        with pytest.raises(UnknownPeerError, match=r"'ghost'.*connected peers: receiver"):
            sender.send("ghost", "x", 1)


def test_send_only_node_cannot_subscribe() -> None:
    with RemoteQueue("pure-sender") as sender, pytest.raises(ConfigurationError, match="local"):
        sender.on("anything")


def test_closed_node_refuses_work(node: RemoteQueue) -> None:
    node.close()
    node.close()
    with pytest.raises(TransportClosedError):
        node.send("x", "t", 1)


def test_connect_racing_close_closes_the_new_link(monkeypatch: pytest.MonkeyPatch) -> None:
    server = TCPServerTransport(host="127.0.0.1", port=0)
    server.start()
    node = RemoteQueue("a")
    links: list[MessageQueue] = []

    def link_while_closing(*args: Any, **kwargs: Any) -> MessageQueue:
        node.close()  # another thread closes the node while this connect is under way
        link = MessageQueue(*args, **kwargs)
        links.append(link)
        return link

    monkeypatch.setattr(remote_module, "MessageQueue", link_while_closing)
    try:
        with pytest.raises(TransportClosedError):
            node.connect("b", "127.0.0.1", server.port)
        assert node.peers == []
        assert len(links) == 1
        assert links[0].closed, "the link opened during close() was left open"
    finally:
        for link in links:
            link.close()
        server.close()


def test_connect_to_nothing_raises_clearly() -> None:
    from eventforge.errors import TransportError

    with RemoteQueue("lonely") as sender, pytest.raises(TransportError, match="cannot connect"):
        sender.connect("nobody", "127.0.0.1", free_port())
    assert sender.peers == []


def test_importing_remote_does_not_import_the_tcp_plugin() -> None:
    code = "import sys, eventforge.queue.remote; print('eventforge_tcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
