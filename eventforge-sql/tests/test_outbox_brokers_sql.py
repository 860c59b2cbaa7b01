"""The outbox relayed to real brokers' work queues: a relay that died after sending and before
its delete committed sends the batch again, and the copies are dropped by the message id."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from eventforge import connect
from eventforge.transport import Transport
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql import Outbox, Relay, Schema, TableNames

pytestmark = pytest.mark.broker

# Where the copies are dropped: JetStream refuses a publish whose Nats-Msg-Id it stored within
# its duplicate window; the Redis work queue marks each id a consumer takes (dedupe_ttl, off by
# default); the AMQP work queue acks a delivery whose id its consumer acked recently.
_DROPPED_BY = {
    "nats": "JetStream (Nats-Msg-Id)",
    "redis": "the consumer's dedupe_ttl mark",
    "amqp": "the consumer's recently-acked ids",
}


class _Died(Exception):
    """The relay process dies here: after the broker stored the batch, before the delete."""


@pytest.fixture
def broker_queue(
    request: pytest.FixtureRequest, unique: Callable[[str], str]
) -> Iterator[tuple[str, WorkQueue]]:
    broker: str = request.param
    server = request.getfixturevalue({"amqp": "rabbit_server"}.get(broker, f"{broker}_server"))
    transport: Transport = connect(server.url)
    name = unique("relayed")
    backend: Any = None
    if broker == "redis":  # dedupe_ttl must be switched on for the Redis work queue to dedupe
        backend = transport.work_queue_backend(name, RetryPolicy(), dedupe_ttl=60.0)
    queue = WorkQueue(name, transport, backend=backend)
    yield broker, queue
    queue.close()
    transport.close()


@pytest.mark.parametrize("broker_queue", list(_DROPPED_BY), indirect=True)
def test_a_batch_resent_after_a_relay_died_reaches_the_consumer_once(
    broker_queue: tuple[str, WorkQueue],
    sqlite_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    broker, queue = broker_queue
    schema = Schema(TableNames(outbox=unique("outbox").replace("-", "_")))
    schema.outbox.create(sqlite_engine)
    outbox = Outbox(schema)
    with sqlite_engine.begin() as conn:
        ids = [outbox.publish(conn, "orders", n) for n in range(20)]

    def send_then_die(messages: list[Any]) -> None:
        queue.backend.put_many(messages)
        raise _Died

    with pytest.raises(_Died):  # its transaction rolls back: the rows stay pending
        Relay(sqlite_engine, send_then_die, outbox).run_once()
    assert Relay(sqlite_engine, queue, outbox).drain() == 20  # the next relay sends them again
    received = []
    while (delivery := queue.get(timeout=0.5)) is not None:
        received.append(delivery.message.id)
        delivery.ack()
    report(
        f"relay died after sending to {broker}: messages 20, sent 40, received "
        f"{len(received)} ({len(set(received))} distinct), copies dropped by {_DROPPED_BY[broker]}"
    )
    assert received == ids
