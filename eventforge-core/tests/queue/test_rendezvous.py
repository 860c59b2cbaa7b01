"""Rendezvous and startup policies, in-process (the cross-process tests run over TCP/Redis/NATS)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest
from eventforge import MemoryTransport, MessageQueue
from eventforge.errors import ConfigurationError
from eventforge.queue.rendezvous import (
    Barrier,
    FixedDelay,
    NoWait,
    PolicyChain,
    rendezvous_for,
    startup_policy,
)


@pytest.fixture
def queues() -> Iterator[list[MessageQueue]]:
    transport = MemoryTransport()
    made = [MessageQueue(transport, close_transport=False) for _ in range(5)]
    yield made
    for queue in made:
        queue.close()
    transport.close()


def test_controller_counts_workers_that_announced_before_it_listened(
    queues: list[MessageQueue],
) -> None:
    controller, *workers = queues
    for worker in workers[:3]:
        worker.announce_ready(["worker"])
    assert controller.wait_until_ready({"worker": 3}, timeout=5)
    assert rendezvous_for(controller).counts() == {"worker": 3}


def test_late_joiners_are_counted_and_each_participant_once(queues: list[MessageQueue]) -> None:
    controller, a, b, c, _ = queues
    a.announce_ready(["worker"])
    a.announce_ready(["worker"])  # announcing twice is still one participant
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(controller.wait_until_ready({"worker": 3}, timeout=10))
    )
    waiter.start()
    b.announce_ready(["worker", "reporter"])
    threading.Event().wait(0.3)  # the controller has re-queried meanwhile
    assert waiter.is_alive()
    c.announce_ready("worker")
    waiter.join(10)
    assert result == [True]
    assert rendezvous_for(controller).counts() == {"worker": 3, "reporter": 1}


def test_timeout_returns_false(queues: list[MessageQueue]) -> None:
    controller, worker, *_ = queues
    worker.announce_ready(["worker"])
    assert controller.wait_until_ready({"worker": 2}, timeout=0.3) is False


def test_leave_withdraws_the_announcement(queues: list[MessageQueue]) -> None:
    controller, worker, *_ = queues
    worker.announce_ready(["worker"])
    assert controller.wait_until_ready({"worker": 1}, timeout=5)
    rendezvous_for(worker).leave()
    assert rendezvous_for(controller).counts() == {}


def test_spaces_are_separate(queues: list[MessageQueue]) -> None:
    controller, worker, *_ = queues
    worker.announce_ready(["worker"], space="blue")
    assert controller.wait_until_ready({"worker": 1}, timeout=0.3, space="red") is False
    assert controller.wait_until_ready({"worker": 1}, timeout=5, space="blue")


def test_queue_that_announced_is_collected_after_close() -> None:
    queue = MessageQueue()
    queue.announce_ready(["worker"])
    assert queue.wait_until_ready({"worker": 1}, timeout=5)
    queue.close()
    gone = weakref.ref(queue)
    del queue
    gc.collect()
    assert gone() is None, "the rendezvous registry keeps every queue (and its transport) alive"


def test_bad_arguments_are_refused(queues: list[MessageQueue]) -> None:
    with pytest.raises(ValueError, match="roles must be non-empty strings"):
        queues[0].announce_ready([])
    with pytest.raises(ValueError, match="requirements must map role names"):
        queues[0].wait_until_ready({"worker": -1})


def test_startup_policies_by_name() -> None:
    assert isinstance(startup_policy("none"), NoWait)
    delay = startup_policy("delay:0.5")
    assert isinstance(delay, FixedDelay)
    assert delay.seconds == 0.5
    barrier = startup_policy({"policy": "barrier", "requires": {"worker": 3}, "timeout": 9})
    assert isinstance(barrier, Barrier)
    assert barrier.requires == {"worker": 3}
    chain = startup_policy(["delay:0", {"policy": "barrier", "roles": ["worker"]}])
    assert isinstance(chain, PolicyChain)
    assert len(chain.policies) == 2
    nested = startup_policy({"policy": "chain", "steps": ["none", "delay:0"]})
    assert isinstance(nested, PolicyChain)
    for bad in ("wait", "delay:soon", {"policy": "barrier"}, {"policy": "delay", "x": 1}, 3):
        with pytest.raises(ConfigurationError):
            startup_policy(bad)


def test_a_chain_runs_in_order_and_stops_at_a_failed_barrier(
    queues: list[MessageQueue],
) -> None:
    controller, worker, *_ = queues
    assert startup_policy([{"policy": "barrier", "roles": ["worker"]}]).run(worker)
    ok = startup_policy(["delay:0", {"policy": "barrier", "requires": {"worker": 1}}])
    assert ok.run(controller) is True
    failing = startup_policy(
        [{"policy": "barrier", "requires": {"worker": 2}, "timeout": 0.2}, "delay:60"]
    )
    assert failing.run(controller) is False  # the 60 s delay never ran
