"""MessageQueue pub/sub: subscribe, on, wildcards, groups, unsubscribe, receive, close, stats."""

from __future__ import annotations

import threading

import pytest
from eventforge import MemoryTransport, Message, MessageQueue
from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.transport import Callback, Capability, Transport


@pytest.fixture
def queue():
    q = MessageQueue()
    yield q
    q.close()


def test_publish_reaches_every_matching_handler_with_the_payload(queue):
    got: list[tuple[str, object]] = []
    queue.subscribe("orders.created", lambda m: got.append(("a", m.payload)))
    queue.subscribe("orders.created", lambda m: got.append(("b", m.payload)))
    queue.subscribe("orders.deleted", lambda m: got.append(("c", m.payload)))
    queue.publish("orders.created", {"id": 1})
    assert got == [("a", {"id": 1}), ("b", {"id": 1})]


def test_publish_returns_the_message_id_and_carries_headers(queue):
    seen: list[Message] = []
    queue.subscribe("a.b", seen.append)
    message_id = queue.publish("a.b", 1, tenant="eu", retries=2)
    assert seen[0].id == message_id
    assert seen[0].headers == {"tenant": "eu", "retries": 2}


def test_publish_rejects_wildcard_topics_and_structured_headers(queue):
    with pytest.raises(ValueError, match="wildcard"):
        queue.publish("a.*", 1)
    with pytest.raises(TypeError, match="header 'meta'"):
        queue.publish("a.b", 1, meta={"x": 1})


def test_wildcards_match_one_or_many_segments(queue):
    one: list[str] = []
    many: list[str] = []
    queue.subscribe("events.*", lambda m: one.append(m.topic))
    queue.subscribe("events.**", lambda m: many.append(m.topic))
    for topic in ("events.user", "events.user.login", "other.user"):
        queue.publish(topic, None)
    assert one == ["events.user"]
    assert many == ["events.user", "events.user.login"]


def test_on_works_as_decorator_and_as_call(queue):
    got: list[str] = []

    @queue.on("x.y")
    def first(message):
        got.append("first")

    def second(message):
        got.append("second")

    assert queue.on("x.y", second) is second
    queue.publish("x.y")
    assert got == ["first", "second"]
    assert queue.unsubscribe(first.handler_id)
    queue.publish("x.y")
    assert got == ["first", "second", "second"]


def test_unsubscribe_stops_delivery_and_reports_whether_it_existed(queue):
    got: list[int] = []
    handler_id = queue.subscribe("a.b", lambda m: got.append(m.payload))
    queue.publish("a.b", 1)
    assert queue.unsubscribe(handler_id) is True
    assert queue.unsubscribe(handler_id) is False
    assert queue.unsubscribe("no-such-id") is False
    queue.publish("a.b", 2)
    assert got == [1]
    assert queue.stats["subscriptions"] == 0


def test_group_delivers_each_message_to_exactly_one_member_round_robin(queue):
    got: dict[str, list[int]] = {"a": [], "b": [], "fan": []}
    queue.subscribe("jobs", lambda m: got["a"].append(m.payload), group="workers")
    queue.subscribe("jobs", lambda m: got["b"].append(m.payload), group="workers")
    queue.subscribe("jobs", lambda m: got["fan"].append(m.payload))
    for i in range(10):
        queue.publish("jobs", i)
    assert sorted(got["a"] + got["b"]) == list(range(10))
    assert len(got["a"]) == len(got["b"]) == 5
    assert got["fan"] == list(range(10))


def test_group_member_unsubscribe_leaves_the_rest_serving(queue):
    got: list[str] = []
    first = queue.subscribe("jobs", lambda m: got.append("a"), group="g")
    queue.subscribe("jobs", lambda m: got.append("b"), group="g")
    queue.unsubscribe(first)
    for _ in range(3):
        queue.publish("jobs")
    assert got == ["b", "b", "b"]


def test_two_groups_each_get_every_message(queue):
    got: dict[str, int] = {"g1": 0, "g2": 0}

    def count(name):
        def handler(message):
            got[name] += 1

        return handler

    queue.subscribe("jobs", count("g1"), group="g1")
    queue.subscribe("jobs", count("g2"), group="g2")
    for _ in range(4):
        queue.publish("jobs")
    assert got == {"g1": 4, "g2": 4}


def test_group_members_must_agree_on_the_dispatcher(queue):
    queue.subscribe("jobs", print, group="g", dispatcher="round_robin")
    with pytest.raises(ValueError, match="same one"):
        queue.subscribe("jobs", print, group="g", dispatcher=_FirstDispatcher())


def test_dispatcher_without_group_is_an_error(queue):
    with pytest.raises(ValueError, match="group"):
        queue.subscribe("jobs", print, dispatcher="round_robin")


def test_receive_returns_buffered_message_or_none_after_timeout(queue):
    queue.publish("inbox.a", "hello")
    message = queue.receive("inbox.a", timeout=1.0)
    assert message is not None
    assert message.payload == "hello"
    assert queue.receive("inbox.a", timeout=0.01) is None


def test_receive_waits_for_a_message_from_another_thread(queue):
    threading.Timer(0.05, lambda: queue.publish("inbox.b", 7)).start()
    message = queue.receive("inbox.b", timeout=10)
    assert message is not None
    assert message.payload == 7


def test_subscribe_rejects_bad_input_with_clear_errors(queue):
    with pytest.raises(TypeError, match="callable"):
        queue.subscribe("a.b", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty segment"):
        queue.subscribe("a..b", print)


def test_wildcards_need_a_transport_that_declares_them():
    queue = MessageQueue(_ExactOnlyTransport())
    with pytest.raises(UnsupportedCapabilityError, match="wildcards"):
        queue.subscribe("a.*", print)
    queue.close()


def test_group_is_local_to_the_queue_when_the_transport_lacks_groups():
    transport = _ExactOnlyTransport()
    queue = MessageQueue(transport)
    got: list[str] = []
    queue.subscribe("jobs", lambda m: got.append("a"), group="g")
    queue.subscribe("jobs", lambda m: got.append("b"), group="g")
    assert len(transport.subs) == 1  # one transport subscription for the whole group
    queue.publish("jobs")
    queue.publish("jobs")
    assert sorted(got) == ["a", "b"]
    queue.close()


def test_close_stops_delivery_closes_the_transport_and_is_idempotent():
    transport = MemoryTransport()
    queue = MessageQueue(transport)
    got: list[int] = []
    queue.subscribe("a.b", lambda m: got.append(1))
    queue.close()
    queue.close()
    assert queue.closed
    with pytest.raises(TransportClosedError, match="closed"):
        queue.publish("a.b")
    with pytest.raises(TransportClosedError):
        queue.subscribe("a.b", print)
    with pytest.raises(TransportClosedError):
        transport.send(Message("a.b"))
    assert got == []


def test_close_transport_false_leaves_a_shared_transport_open():
    transport = MemoryTransport()
    first = MessageQueue(transport, close_transport=False)
    second = MessageQueue(transport, close_transport=False)
    got: list[int] = []
    second.subscribe("a.b", lambda m: got.append(m.payload))
    first.publish("a.b", 1)
    first.close()
    third = MessageQueue(transport, close_transport=False)
    third.publish("a.b", 2)
    assert got == [1, 2]
    second.close()
    transport.close()


def test_subscribe_racing_close_leaves_no_subscription_or_thread() -> None:
    transport = MemoryTransport()
    queue = MessageQueue(transport, close_transport=False)
    subscribe = transport.subscribe

    def closed_meanwhile(topic: str, callback: object, **options: object) -> str:
        queue.close()  # another thread closes the queue while this subscribe is under way
        return subscribe(topic, callback, **options)  # type: ignore[arg-type]

    transport.subscribe = closed_meanwhile  # type: ignore[method-assign]
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(TransportClosedError):
        queue.subscribe("a.b", lambda message: None, threaded=True)
    assert queue.stats["subscriptions"] == 0
    assert transport.stats()["subscriptions"] == 0
    leaked = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.name.startswith("eventforge-")
    ]
    for thread in leaked:
        thread.join(2)
    assert not [t for t in leaked if t.is_alive()], "the handler's worker thread was left running"
    transport.close()


def test_context_manager_closes():
    with MessageQueue() as queue:
        queue.publish("a.b")
    assert queue.closed


def test_stats_count_published_and_delivered(queue):
    queue.subscribe("a.b", lambda m: None)
    queue.subscribe("a.b", lambda m: None)
    queue.publish("a.b")
    queue.publish("a.c")
    stats = queue.stats
    assert stats["published"] == 2
    assert stats["delivered"] == 2
    assert stats["handler_errors"] == 0
    assert stats["subscriptions"] == 2
    assert stats["transport"]["sent"] == 2


def test_transport_must_be_a_transport():
    with pytest.raises(TypeError, match="Transport"):
        MessageQueue(transport=object())  # type: ignore[arg-type]


class _FirstDispatcher:
    """A dispatcher with another name, to check that group members must agree."""

    def __new__(cls):
        from eventforge.dispatch import Dispatcher

        class First(Dispatcher):
            name = "first"

            def dispatch(self, targets, invoke):
                if targets:
                    invoke(targets[0])

        return First()


class _ExactOnlyTransport(Transport):
    """A minimal third-party-style transport: exact topics, no groups, no wildcards."""

    name = "exact-only"
    capabilities = frozenset({Capability.HEADERS})

    def __init__(self) -> None:
        self.subs: dict[str, tuple[str, Callback]] = {}
        self._n = 0

    def send(self, message: Message) -> None:
        for topic, callback in list(self.subs.values()):
            if topic == message.topic:
                callback(message)

    def receive(self, topic, timeout=None):
        return None

    def subscribe(self, topic, callback):
        self._n += 1
        self.subs[str(self._n)] = (topic, callback)
        return str(self._n)

    def unsubscribe(self, subscription_id):
        return self.subs.pop(subscription_id, None) is not None

    def close(self) -> None:
        self.subs.clear()


def test_publish_path_message_builder_fills_every_message_slot():
    from eventforge.message import new_message

    assert set(Message.__slots__) == {
        "topic",
        "payload",
        "headers",
        "id",
        "timestamp",
        "reply_to",
        "correlation_id",
    }, "Message gained a field: teach eventforge.message.new_message to fill it"
    fast = new_message("a.b", {"x": 1}, {"h": 1})
    slow = Message("a.b", {"x": 1}, {"h": 1})
    fields = fast.to_dict()
    assert fields.keys() == slow.to_dict().keys()
    assert fields["id"] != slow.id
    fields.update(id=slow.id, timestamp=slow.timestamp)
    assert fields == slow.to_dict()


def test_group_dispatcher_by_name_from_the_registry(queue):
    got: list[str] = []
    queue.subscribe("jobs", lambda m: got.append("a"), group="g", dispatcher="broadcast")
    queue.subscribe("jobs", lambda m: got.append("b"), group="g", dispatcher="broadcast")
    queue.publish("jobs")
    assert got == ["a", "b"]  # a broadcast "group" hands every message to every member


def test_group_dispatcher_instance_is_used(queue):
    dispatcher = _FirstDispatcher()
    got: list[str] = []
    first = queue.subscribe("jobs", lambda m: got.append("a"), group="g", dispatcher=dispatcher)
    queue.subscribe("jobs", lambda m: got.append("b"), group="g", dispatcher=dispatcher)
    queue.publish("jobs")
    queue.publish("jobs")
    assert got == ["a", "a"]
    queue.unsubscribe(first)
    queue.publish("jobs")
    assert got == ["a", "a", "b"]


def test_unknown_dispatcher_name_is_a_clear_error(queue):
    from eventforge.errors import PluginNotFoundError

    with pytest.raises(PluginNotFoundError, match="round_robin"):
        queue.subscribe("jobs", print, group="g", dispatcher="round_robbin")
    assert queue.stats["subscriptions"] == 0


def test_threaded_group_members(queue):
    seen: list[str] = []
    done = threading.Event()

    def member(name):
        def handler(message):
            seen.append(name)
            if len(seen) == 4:
                done.set()

        return handler

    queue.subscribe("jobs", member("a"), group="g", threaded=True)
    queue.subscribe("jobs", member("b"), group="g", threaded=True)
    for _ in range(4):
        queue.publish("jobs")
    assert done.wait(10)
    assert sorted(seen) == ["a", "a", "b", "b"]


def test_concurrent_publishers_lose_nothing_and_groups_stay_exclusive(queue):
    lock = threading.Lock()
    members: dict[str, list[tuple[int, int]]] = {"a": [], "b": [], "c": []}
    everyone: list[tuple[int, int]] = []

    def member(name):
        def handler(message):
            with lock:
                members[name].append(message.payload)

        return handler

    for name in members:
        queue.subscribe("load.jobs", member(name), group="g")
    queue.subscribe("load.*", lambda m: everyone.append(m.payload))

    def publisher(worker):
        for n in range(500):
            queue.publish("load.jobs", (worker, n))

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sorted((w, n) for w in range(4) for n in range(500))
    assert sorted(p for got in members.values() for p in got) == expected
    assert sorted(everyone) == expected
    assert all(len(got) > 0 for got in members.values())
    assert queue.stats["published"] == 2000
    assert queue.stats["delivered"] == 4000


def test_transport_may_be_named_by_url():
    queue = MessageQueue("memory://?max_queue_size=5")
    assert isinstance(queue.transport, MemoryTransport)
    assert queue.transport.max_queue_size == 5
    queue.close()
