"""Closing gives back everything opening took: threads, fds, sockets and server-side clients.

The private nats-server runs with its monitoring port, so ``/varz`` tells how many client
connections it still holds.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import pytest
from eventforge import MessageQueue
from eventforge.testing.brokers import NatsServer, free_port
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.testing.waiting import wait_until
from eventforge_nats.transport import NatsTransport

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not PROC_FD_AVAILABLE, reason="counts sockets through /proc/self/fd"),
]


def server_connections(monitor_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=5) as reply:
        return int(json.load(reply)["connections"])


def test_500_queues_opened_and_closed_return_threads_fds_sockets_and_server_clients(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    monitor = free_port()
    server = nats_server_factory(jetstream=False, extra_args=["-m", str(monitor)])
    NatsTransport(server.url).close()  # warm: the shared loop thread and lazy imports
    baseline = snapshot()
    for i in range(500):
        queue = MessageQueue(NatsTransport(server.url))
        queue.subscribe("orders.new", lambda m: None)
        queue.publish("orders.new", i)
        queue.close()
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 500 closes: {after}"
    assert wait_until(lambda: server_connections(monitor) == 0), (
        f"nats-server still holds {server_connections(monitor)} connections of closed transports"
    )
