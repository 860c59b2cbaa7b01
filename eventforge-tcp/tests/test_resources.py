"""Closing gives back everything opening took: threads, file descriptors, sockets, connections."""

from __future__ import annotations

import pytest
from eventforge import MessageQueue
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.testing.waiting import wait_until
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

pytestmark = pytest.mark.skipif(
    not PROC_FD_AVAILABLE, reason="counts file descriptors through /proc/self/fd"
)


def test_500_client_queues_opened_and_closed_return_threads_fds_sockets_and_connections(
    server: TCPServerTransport,
) -> None:
    TCPClientTransport("127.0.0.1", server.port).connect().close()  # warm: lazy imports
    baseline = snapshot()
    for i in range(500):
        queue = MessageQueue(TCPClientTransport("127.0.0.1", server.port).connect())
        queue.subscribe("orders.new", lambda m: None)
        queue.publish("orders.new", i)
        queue.close()
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 500 closes: {after}"
    assert wait_until(lambda: server.stats()["connections"] == 0), server.stats()


def test_500_servers_started_and_closed_return_threads_fds_and_sockets() -> None:
    TCPServerTransport("127.0.0.1", 0).start().close()
    baseline = snapshot()
    for _ in range(500):
        server = TCPServerTransport("127.0.0.1", 0).start()
        client = TCPClientTransport("127.0.0.1", server.port).connect()
        client.close()
        server.close()
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 500 closes: {after}"
