"""The durable work queue of local://: what the conformance suite does not cover."""

from __future__ import annotations

from pathlib import Path

from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.transports.local import LocalTransport, LocalWorkQueueBackend
from eventforge.workqueue import RetryPolicy, WorkQueue

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, jitter=0.0)


def test_work_queue_on_a_local_transport_is_durable_across_reopening(tmp_path: Path) -> None:
    with LocalTransport(tmp_path) as transport:
        queue = WorkQueue("jobs", transport)
        assert isinstance(queue.backend, LocalWorkQueueBackend)
        assert queue.backend.durable
        queue.put({"n": 1})
        queue.put({"n": 2})
        queue.close()
    with LocalTransport(tmp_path) as transport:
        queue = WorkQueue("jobs", transport)
        got = []
        for _ in range(2):
            delivery = queue.get(timeout=5)
            assert delivery is not None
            got.append(delivery.message.payload)
            delivery.ack()
        assert got == [{"n": 1}, {"n": 2}]
        assert queue.get(timeout=0.05) is None
        queue.close()


def test_put_of_a_known_id_stores_nothing(tmp_path: Path) -> None:
    with LocalTransport(tmp_path) as transport:
        backend = transport.work_queue_backend("dedupe", FAST)
        message = Message("dedupe", "once")
        backend.put(message)
        backend.put(message)
        (delivery,) = backend.fetch(1, timeout=5)
        backend.ack(delivery)
        backend.put(message)  # settled ids are remembered for dedupe_window
        assert backend.fetch(1, timeout=0.05) == []
        assert backend.stats()["duplicates"] == 2
        assert backend.stats()["put"] == 1


def test_item_whose_lease_runs_out_max_attempts_times_is_dead_lettered(tmp_path: Path) -> None:
    with LocalTransport(tmp_path, visibility_timeout=0.05) as transport:
        queue = WorkQueue("stuck", transport, retry=FAST)
        queue.put("never settled")
        attempts = []
        for _ in range(3):
            delivery = queue.get(timeout=5)
            assert delivery is not None
            attempts.append(delivery.attempt)  # and never settled: the lease runs out
        assert attempts == [1, 2, 3]
        assert queue.get(timeout=0.3) is None
        (letter,) = queue.dead_letters()
        assert letter.reason.startswith("delivered 3 times without being settled (max_attempts=3)")
        assert letter.message.payload == "never settled"
        assert queue.replay() == 1
        again = queue.get(timeout=5)
        assert again is not None
        assert again.attempt == 1
        again.ack()
        queue.close()


def test_a_blocked_fetch_is_woken_by_a_put_in_another_transport(tmp_path: Path) -> None:
    # The safety-net check runs once an hour: only the doorbell can wake the fetch.
    with (
        LocalTransport(tmp_path, check_interval=3600) as consumer,
        LocalTransport(tmp_path, check_interval=3600) as producer,
    ):
        backend = consumer.work_queue_backend("bell", FAST)
        assert backend.fetch(1, timeout=0.01) == []  # now listening
        other = producer.work_queue_backend("bell", FAST)
        other.put(Message("bell", 1))
        (delivery,) = backend.fetch(1, timeout=30)
        assert delivery.message.payload == 1
        backend.ack(delivery)
        assert wait_until(lambda: backend.stats()["pending"] == 0, timeout=5)


def test_an_ack_is_buffered_then_committed_with_the_next_fetch_or_soon_after(
    tmp_path: Path,
) -> None:
    with LocalTransport(tmp_path) as consumer_side, LocalTransport(tmp_path) as other:
        backend = consumer_side.work_queue_backend("acks", FAST)
        watcher = other.work_queue_backend("acks", FAST)
        backend.put_many([Message("acks", n) for n in range(3)])
        first, second = backend.fetch(2, timeout=5)
        assert backend.ack(first) is None  # buffered: its lease has time left
        (third,) = backend.fetch(1, timeout=5)  # the same transaction commits the ack
        assert watcher.stats()["in_flight"] == 2
        assert backend.ack(second) is None
        assert backend.ack(third) is None
        # No further fetch: the buffered acks are committed within ACK_DELAY all the same.
        assert wait_until(lambda: watcher.stats()["in_flight"] == 0, timeout=5)
        assert watcher.stats()["pending"] == 0
        assert backend.stats()["acked"] == 3
