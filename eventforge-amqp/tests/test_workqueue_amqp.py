"""The quorum-queue work queue beyond the conformance suite: delayed retries through the delay
levels, redelivery when a consumer's channel goes, unreadable items, dedupe, bounded prefetch,
declaration conflicts and items whose consumers keep dying."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from eventforge.message import Message
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import Delivery, RetryPolicy, WorkQueue
from eventforge_amqp import TopologyConflictError
from eventforge_amqp.transport import AmqpTransport

from .helpers import raw_channel, ready_count

pytestmark = pytest.mark.broker

Make = Callable[..., AmqpTransport]
POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)


def qname() -> str:
    return f"wq{os.urandom(4).hex()}"


def test_nack_with_delay_waits_in_the_delay_levels_then_comes_back(make_amqp: Make) -> None:
    backend = make_amqp().work_queue_backend(qname(), POLICY)
    backend.put(Message("job", {"n": 1}))
    (first,) = backend.fetch(1, timeout=5)
    first.nack(delay=0.3)
    assert backend.stats()["delayed"] == 1
    (again,) = backend.fetch(1, timeout=10)
    assert again.attempt == 2
    assert again.message.id == first.message.id
    assert again.message.payload == {"n": 1}
    again.ack()
    assert wait_until(lambda: backend.stats()["pending"] == 0, 5)


def test_unsettled_items_return_when_the_consumer_goes(make_amqp: Make) -> None:
    name = qname()
    producer = make_amqp().work_queue_backend(name, POLICY)
    producer.put_many([Message("job", i) for i in range(3)])
    consumer_transport = make_amqp()
    consumer = consumer_transport.work_queue_backend(name, POLICY)
    held: list[Delivery] = []
    while len(held) < 3:
        got = consumer.fetch(3 - len(held), timeout=5)
        assert got, f"only {len(held)} of 3 items arrived"
        held += got
    assert [d.message.payload for d in held] == [0, 1, 2]
    consumer_transport.close()  # no ack: the broker gives them back
    again = producer.fetch(3, timeout=5)
    assert sorted(d.message.payload for d in again) == [0, 1, 2]
    assert {d.attempt for d in again} == {2}


def test_unreadable_item_is_dead_lettered_with_the_reason(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    name = qname()
    backend = make_amqp().work_queue_backend(name, POLICY)
    with raw_channel(rabbit_server.port) as channel:
        channel.basic_publish("", f"eventforge.wq.{name}", b"<xml>not json</xml>")
    backend.put(Message("job", "good"))
    (delivery,) = backend.fetch(1, timeout=5)
    assert delivery.message.payload == "good"
    delivery.ack()
    (letter,) = backend.dead_letters()
    assert "malformed item" in letter.reason
    assert backend.stats()["malformed"] == 1
    assert backend.replay() == 0  # an unreadable letter is never put back


def test_a_redelivered_id_that_was_acked_is_dropped(make_amqp: Make) -> None:
    backend = make_amqp().work_queue_backend(qname(), POLICY)
    message = Message("job", "once")
    backend.put(message)
    (delivery,) = backend.fetch(1, timeout=5)
    delivery.ack()
    backend.put(Message("job", "once", id=message.id))  # a publisher retry after a lost confirm
    backend.put(Message("job", "next"))
    (following,) = backend.fetch(1, timeout=5)
    assert following.message.payload == "next"
    assert backend.stats()["duplicates_dropped"] == 1


def test_prefetch_bounds_what_one_consumer_holds(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    name = qname()
    backend = make_amqp(prefetch=3).work_queue_backend(name, POLICY)
    backend.put_many([Message("job", i) for i in range(10)])
    assert len(backend.fetch(1, timeout=5)) == 1
    assert wait_until(lambda: ready_count(rabbit_server.port, f"eventforge.wq.{name}") == 7, 5)


def test_existing_classic_queue_of_the_name_is_a_conflict(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    name = qname()
    with raw_channel(rabbit_server.port) as channel:
        channel.queue_declare(f"eventforge.wq.{name}", durable=True)
    with pytest.raises(TopologyConflictError, match="x-queue-type"):
        make_amqp().work_queue_backend(name, POLICY)


def test_failed_item_is_dead_lettered_after_max_attempts_and_replayed(make_amqp: Make) -> None:
    queue = WorkQueue(qname(), make_amqp(), retry=POLICY)
    try:
        queue.put({"boom": True})
        for _ in range(3):
            delivery = queue.get(timeout=10)
            assert delivery is not None
            delivery.nack()
        assert wait_until(lambda: queue.stats["dead_letters"] == 1, 10)
        (letter,) = queue.dead_letters()
        assert letter.attempts == 3
        assert queue.replay() == 1
        again = queue.get(timeout=10)
        assert again is not None
        assert again.attempt == 1
        assert again.message.payload == {"boom": True}
        again.ack()
    finally:
        queue.close()


def test_item_whose_consumers_keep_vanishing_is_dead_lettered(make_amqp: Make) -> None:
    name = qname()
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)
    make_amqp().work_queue_backend(name, policy).put(Message("job", "crashes its consumer"))
    for attempt in (1, 2):
        transport = make_amqp()
        (delivery,) = transport.work_queue_backend(name, policy).fetch(1, timeout=5)
        assert delivery.attempt == attempt
        transport.close()  # the consumer dies holding it
    survivor = make_amqp().work_queue_backend(name, policy)
    assert survivor.fetch(1, timeout=1) == []
    (letter,) = survivor.dead_letters()
    assert "delivered 3 times" in letter.reason
    assert survivor.stats()["over_delivered"] == 1
