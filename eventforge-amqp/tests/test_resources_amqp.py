"""Closing gives back everything opening took: threads, fds, sockets and the broker's connections."""

from __future__ import annotations

import os

import pytest
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import RetryPolicy
from eventforge_amqp.transport import AmqpTransport

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not PROC_FD_AVAILABLE, reason="counts sockets through /proc/self/fd"),
]


def broker_connections(node: RabbitServer) -> set[str]:
    """The client ports of the connections the node holds (one ``rabbitmqctl`` call)."""
    lines = node.ctl("list_connections", "peer_port", "--quiet", "--no-table-headers").split()
    return {line.strip() for line in lines if line.strip().isdigit()}


def test_queues_opened_and_closed_in_a_loop_return_threads_fds_and_sockets(
    rabbit_server: RabbitServer,
) -> None:
    AmqpTransport(rabbit_server.url).close()  # warm: the shared loop thread and lazy imports
    before = broker_connections(rabbit_server)
    baseline = snapshot()
    topic = f"res{os.urandom(4).hex()}.new"
    for i in range(50):
        queue = MessageQueue(AmqpTransport(rabbit_server.url))
        queue.subscribe(topic, lambda m: None)
        queue.publish(topic, i)
        queue.close()
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 50 closes: {after}"
    assert wait_until(lambda: broker_connections(rabbit_server) <= before, 10, interval=0.5), (
        f"the node still holds connections of closed transports: "
        f"{broker_connections(rabbit_server) - before}"
    )


def test_close_releases_every_socket_and_thread_while_the_transport_is_still_referenced(
    rabbit_server: RabbitServer,
) -> None:
    AmqpTransport(rabbit_server.url).close()
    baseline = snapshot()
    kept = []
    name = f"res{os.urandom(4).hex()}"
    for i in range(15):
        transport = AmqpTransport(rabbit_server.url)
        transport.subscribe(f"{name}.*", lambda m: None)
        transport.subscribe(f"{name}.jobs", lambda m: None, group="workers")
        transport.send(Message(f"{name}.new", i))
        backend = transport.work_queue_backend(f"{name}-tasks", RetryPolicy())
        backend.put(Message(f"{name}-tasks", i))
        transport.close()
        kept.append(transport)  # still referenced: garbage collection cannot close anything
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 15 closes: {after}"
