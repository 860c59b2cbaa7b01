"""MemoryTransport beyond the shared contract: buffers, groups, waiters, threads, stats."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from eventforge.errors import ConfigurationError, TransportClosedError
from eventforge.message import Message
from eventforge.transports.memory import MemoryTransport


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    t = MemoryTransport()
    yield t
    t.close()


def drain(t: MemoryTransport, topic: str) -> list[object]:
    """Everything buffered on ``topic`` right now, oldest first."""
    out = []
    while (message := t.receive(topic, timeout=0)) is not None:
        out.append(message.payload)
    return out


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, 1.5, "10", None])
def test_max_queue_size_must_be_a_positive_int(size: object) -> None:
    with pytest.raises(ConfigurationError, match="max_queue_size must be a positive int") as info:
        MemoryTransport(max_queue_size=size)  # type: ignore[arg-type]
    assert info.value.key == "max_queue_size"


def test_unknown_overflow_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="drop_oldest, drop_newest, got 'block'"):
        MemoryTransport(overflow="block")


# -- the bounded buffer ------------------------------------------------------------------------


def test_unconsumed_messages_wait_in_the_buffer(transport: MemoryTransport) -> None:
    for n in range(3):
        transport.send(Message("jobs.new", n))
    assert transport.stats()["buffered"] == 3
    assert drain(transport, "jobs.new") == [0, 1, 2]
    assert transport.stats()["buffered"] == 0
    assert transport.stats()["buffered_total"] == 3


def test_drop_oldest_overflow_is_counted() -> None:
    t = MemoryTransport(max_queue_size=3)
    for n in range(5):
        t.send(Message("jobs.new", n))
    assert t.stats()["dropped"] == 2
    assert drain(t, "jobs.new") == [2, 3, 4]


def test_drop_newest_overflow_is_counted() -> None:
    t = MemoryTransport(max_queue_size=3, overflow="drop_newest")
    for n in range(5):
        t.send(Message("jobs.new", n))
    assert t.stats()["dropped"] == 2
    assert drain(t, "jobs.new") == [0, 1, 2]


def test_each_topic_has_its_own_bound() -> None:
    t = MemoryTransport(max_queue_size=2)
    for n in range(2):
        t.send(Message("a.one", n))
        t.send(Message("a.two", n))
    assert t.stats()["dropped"] == 0
    assert t.stats()["buffered"] == 4


def test_messages_a_subscriber_took_are_not_buffered(transport: MemoryTransport) -> None:
    got: list[Message] = []
    transport.subscribe("events.*", got.append)
    transport.send(Message("events.user", 1))
    assert len(got) == 1
    assert transport.receive("events.user", timeout=0) is None
    assert transport.stats()["buffered_total"] == 0


def test_receive_with_a_pattern_takes_the_oldest_match(transport: MemoryTransport) -> None:
    transport.send(Message("logs.b", "first", timestamp=1.0))
    transport.send(Message("logs.a", "second", timestamp=2.0))
    transport.send(Message("other.a", "never", timestamp=0.5))
    assert drain(transport, "logs.*") == ["first", "second"]
    assert drain(transport, "**") == ["never"]


def test_close_drops_the_buffer_and_refuses_later_calls(transport: MemoryTransport) -> None:
    transport.send(Message("a.b", 1))
    transport.close()
    with pytest.raises(TransportClosedError, match="closed"):
        transport.receive("a.b", timeout=0)
    with pytest.raises(TransportClosedError):
        transport.send(Message("a.b", 2))
    assert transport.unsubscribe("mem-1") is False
    assert "closed" in repr(transport)


# -- subscriptions -----------------------------------------------------------------------------


def test_callbacks_run_in_the_publishers_thread_with_the_same_object(
    transport: MemoryTransport,
) -> None:
    seen: list[tuple[int, Message]] = []
    transport.subscribe("a.b", lambda m: seen.append((threading.get_ident(), m)))
    message = Message("a.b", {"big": list(range(10))})
    transport.send(message)
    assert seen == [(threading.get_ident(), message)]
    assert seen[0][1] is message


def test_callback_errors_are_counted_and_logged(
    transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(message: Message) -> None:
        raise RuntimeError("handler broke")

    got: list[Message] = []
    transport.subscribe("a.b", boom)
    transport.subscribe("a.b", got.append)
    transport.send(Message("a.b", 1))
    assert len(got) == 1
    assert transport.stats()["callback_errors"] == 1
    assert "subscription callback raised for topic 'a.b'" in caplog.text


def test_subscribe_rejects_non_callables_and_bad_patterns(transport: MemoryTransport) -> None:
    with pytest.raises(TypeError, match="callback must be callable, got int"):
        transport.subscribe("a.b", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wildcards must stand alone"):
        transport.subscribe("a*", print)
    assert transport.stats()["subscriptions"] == 0


def test_a_callback_may_unsubscribe_itself(transport: MemoryTransport) -> None:
    got: list[object] = []
    sub_id = ""

    def once(message: Message) -> None:
        got.append(message.payload)
        transport.unsubscribe(sub_id)

    sub_id = transport.subscribe("a.b", once)
    transport.send(Message("a.b", 1))
    transport.send(Message("a.b", 2))
    assert got == [1]


def test_a_callback_may_publish(transport: MemoryTransport) -> None:
    got: list[object] = []
    transport.subscribe("ping", lambda m: transport.send(Message("pong", m.payload)))
    transport.subscribe("pong", lambda m: got.append(m.payload))
    transport.send(Message("ping", 7))
    assert got == [7]


# -- groups ------------------------------------------------------------------------------------


def test_group_members_take_turns_and_fanout_sees_all(transport: MemoryTransport) -> None:
    members: list[list[Message]] = [[], [], []]
    for bucket in members:
        transport.subscribe("jobs.*", bucket.append, group="workers")
    everyone: list[Message] = []
    transport.subscribe("jobs.*", everyone.append)
    for n in range(9):
        transport.send(Message("jobs.run", n))
    assert [len(bucket) for bucket in members] == [3, 3, 3]
    assert sorted(m.payload for bucket in members for m in bucket) == list(range(9))
    assert len(everyone) == 9


def test_two_groups_each_get_every_message(transport: MemoryTransport) -> None:
    billing: list[Message] = []
    audit: list[Message] = []
    transport.subscribe("orders.created", billing.append, group="billing")
    transport.subscribe("orders.created", audit.append, group="audit")
    for n in range(4):
        transport.send(Message("orders.created", n))
    assert len(billing) == 4
    assert len(audit) == 4


def test_group_unsubscribe_rebalances_and_removes_empty_group(transport: MemoryTransport) -> None:
    a: list[Message] = []
    b: list[Message] = []
    sub_a = transport.subscribe("jobs", a.append, group="g")
    sub_b = transport.subscribe("jobs", b.append, group="g")
    assert transport.unsubscribe(sub_a) is True
    for n in range(3):
        transport.send(Message("jobs", n))
    assert (len(a), len(b)) == (0, 3)
    assert transport.unsubscribe(sub_b) is True
    assert transport.unsubscribe(sub_b) is False
    transport.send(Message("jobs", "left over"))
    assert drain(transport, "jobs") == ["left over"]  # no member left: buffered, not lost
    c: list[Message] = []
    transport.subscribe("jobs", c.append, group="g")  # the group can be formed again
    transport.send(Message("jobs", "again"))
    assert [m.payload for m in c] == ["again"]


# -- waiters -----------------------------------------------------------------------------------


def _receive_later(
    t: MemoryTransport, topic: str, timeout: float | None = 5.0
) -> tuple[threading.Thread, list[Message | None]]:
    out: list[Message | None] = []
    thread = threading.Thread(target=lambda: out.append(t.receive(topic, timeout)), daemon=True)
    thread.start()
    return thread, out


def _wait_for_waiters(t: MemoryTransport, count: int) -> None:
    deadline = threading.Event()
    for _ in range(5000):
        if sum(1 for key in t._keys if key.startswith("wait-")) >= count:
            return
        deadline.wait(0.001)
    raise AssertionError(f"{count} receivers never started waiting")


def test_a_waiting_receiver_takes_the_message_exclusively(transport: MemoryTransport) -> None:
    first, out1 = _receive_later(transport, "jobs.*")
    second, out2 = _receive_later(transport, "jobs.*", timeout=0.3)
    _wait_for_waiters(transport, 2)
    transport.send(Message("jobs.one", "only"))
    first.join(5)
    second.join(5)
    payloads = [m.payload for m in out1 + out2 if m is not None]
    assert payloads == ["only"]
    assert transport.stats()["buffered_total"] == 0


def test_subscribers_and_a_waiter_both_get_the_message(transport: MemoryTransport) -> None:
    got: list[Message] = []
    transport.subscribe("a.b", got.append)
    thread, out = _receive_later(transport, "a.b")
    _wait_for_waiters(transport, 1)
    message = Message("a.b", 1)
    transport.send(message)
    thread.join(5)
    assert out == [message]
    assert got == [message]


def test_receive_timeout_leaves_no_waiter_behind(transport: MemoryTransport) -> None:
    assert transport.receive("a.b", timeout=0.01) is None
    assert transport.stats()["subscriptions"] == 0
    transport.send(Message("a.b", 1))
    assert drain(transport, "a.b") == [1]


def test_close_wakes_blocked_receivers() -> None:
    t = MemoryTransport()
    thread, out = _receive_later(t, "a.b", timeout=None)
    _wait_for_waiters(t, 1)
    t.close()
    thread.join(5)
    assert not thread.is_alive(), "receive(timeout=None) stayed blocked after close()"
    assert out == [None]


# -- asyncio -----------------------------------------------------------------------------------


def test_receive_async_returns_a_buffered_message(transport: MemoryTransport) -> None:
    transport.send(Message("a.b", "early"))
    message = asyncio.run(transport.receive_async("a.b", timeout=1))
    assert message is not None
    assert message.payload == "early"


def test_receive_async_is_woken_from_another_thread(transport: MemoryTransport) -> None:
    async def main() -> Message | None:
        task = asyncio.create_task(transport.receive_async("a.*", timeout=5))
        while not any(key.startswith("wait-") for key in transport._keys):
            await asyncio.sleep(0.001)
        threading.Thread(target=transport.send, args=(Message("a.x", "hi"),)).start()
        return await task

    message = asyncio.run(main())
    assert message is not None
    assert message.payload == "hi"


def test_receive_async_timeout_returns_none(transport: MemoryTransport) -> None:
    assert asyncio.run(transport.receive_async("a.b", timeout=0.01)) is None
    assert transport.stats()["subscriptions"] == 0


def test_cancelled_receive_async_loses_nothing(transport: MemoryTransport) -> None:
    async def main() -> None:
        task = asyncio.create_task(transport.receive_async("a.b"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    transport.send(Message("a.b", "after cancel"))
    assert drain(transport, "a.b") == ["after cancel"]


def test_message_offered_while_receive_async_is_cancelled_is_kept(
    transport: MemoryTransport,
) -> None:
    async def main() -> None:
        task = asyncio.create_task(transport.receive_async("a.b"))
        while not any(key.startswith("wait-") for key in transport._keys):
            await asyncio.sleep(0.001)
        transport.send(Message("a.b", "in flight"))  # resolves the future "soon"
        task.cancel()  # ...but the task is cancelled first
        try:
            result = await task
        except asyncio.CancelledError:
            result = None
        if result is None:
            assert drain(transport, "a.b") == ["in flight"], "the offered message was lost"
        else:
            assert result.payload == "in flight"

    asyncio.run(main())


def test_send_survives_a_receiver_whose_event_loop_was_closed(
    transport: MemoryTransport,
) -> None:
    loop = asyncio.new_event_loop()
    task = loop.create_task(transport.receive_async("a.b"))
    loop.run_until_complete(asyncio.sleep(0.01))  # the receiver is now waiting
    loop.close()  # abandoned without finishing the task
    transport.send(Message("a.b", "kept"))
    assert drain(transport, "a.b") == ["kept"]
    del task


def test_close_wakes_receive_async() -> None:
    t = MemoryTransport()

    async def main() -> Message | None:
        task = asyncio.create_task(t.receive_async("a.b"))
        while not any(key.startswith("wait-") for key in t._keys):
            await asyncio.sleep(0.001)
        t.close()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) is None


# -- threads -----------------------------------------------------------------------------------


def test_eight_publisher_threads_lose_nothing() -> None:
    t = MemoryTransport()
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    grouped: Counter[int] = Counter()

    def count(message: Message) -> None:
        with lock:
            counts[message.payload] += 1

    def count_group(message: Message) -> None:
        with lock:
            grouped[message.payload] += 1

    t.subscribe("load.*", count)
    t.subscribe("load.**", count_group, group="g")
    t.subscribe("load.**", count_group, group="g")
    per_thread = 500
    barrier = threading.Barrier(8)

    def publish(worker: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            t.send(Message(f"load.w{worker}", worker * per_thread + n))

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = 8 * per_thread
    assert t.stats()["sent"] == total
    assert sorted(counts) == list(range(total))
    assert set(counts.values()) == {1}
    assert sorted(grouped) == list(range(total))
    assert set(grouped.values()) == {1}
    assert t.stats()["dropped"] == 0
    t.close()


def test_concurrent_subscribe_unsubscribe_and_send() -> None:
    t = MemoryTransport()
    stop = threading.Event()
    errors: list[BaseException] = []
    stable: list[Message] = []
    t.subscribe("churn.x", stable.append)

    def churn() -> None:
        try:
            while not stop.is_set():
                sub_id = t.subscribe("churn.*", lambda m: None, group="g")
                assert t.unsubscribe(sub_id)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    churner = threading.Thread(target=churn)
    churner.start()
    for n in range(2000):
        t.send(Message("churn.x", n))
    stop.set()
    churner.join()
    assert errors == []
    assert [m.payload for m in stable] == list(range(2000))
    t.close()
