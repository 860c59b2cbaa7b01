"""Closing a local:// transport gives back everything opening took: threads, file descriptors
(the database, its WAL, the doorbell sockets) and sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.transports.local import LocalTransport
from eventforge.workqueue import RetryPolicy, WorkQueue

pytestmark = pytest.mark.skipif(
    not PROC_FD_AVAILABLE, reason="counts file descriptors through /proc/self/fd"
)


def use(transport: LocalTransport, i: int) -> None:
    """Everything that opens something: a subscription (the reader thread, a doorbell), a
    named one, a send, and a work queue with a delivery settled."""
    transport.subscribe("orders.*", lambda m: None)
    transport.subscribe("orders.new", lambda m: None, durable="audit")
    transport.send(Message("orders.new", i))
    queue = WorkQueue("tasks", transport=transport, retry=RetryPolicy(max_attempts=2))
    queue.put(i)
    delivery = queue.get(timeout=5)
    assert delivery is not None
    delivery.ack()
    queue.close()


def test_queues_opened_and_closed_in_a_loop_return_threads_fds_and_sockets(
    tmp_path: Path,
) -> None:
    with MessageQueue(LocalTransport(tmp_path)) as warm:  # warm: lazy imports, the schema
        use(warm.transport, -1)  # type: ignore[arg-type]
    baseline = snapshot()
    for i in range(50):
        with MessageQueue(LocalTransport(tmp_path)) as queue:
            use(queue.transport, i)  # type: ignore[arg-type]
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 50 closes: {after}"


def test_close_releases_every_fd_and_thread_while_the_transport_is_still_referenced(
    tmp_path: Path,
) -> None:
    LocalTransport(tmp_path).close()
    baseline = snapshot()
    kept = []
    for i in range(20):
        transport = LocalTransport(tmp_path)
        use(transport, i)
        transport.close()
        kept.append(transport)  # still referenced: garbage collection cannot close anything
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 20 closes: {after}"
