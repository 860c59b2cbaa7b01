"""The Transport conformance suite: the contract of :class:`~eventforge.transport.Transport` as tests.

A transport proves itself by subclassing :class:`TransportConformance` in its own test module
and providing one fixture, ``make_transport``: a factory whose every call returns a transport
attached to the same shared "space" for the current test (an in-process transport may return
the same instance every time; a network transport returns a new client connected to the same
server or broker)::

    import pytest
    from eventforge.testing.conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def make_transport(self, my_server):
            return lambda: MyTransport(my_server.url)

Tests of optional features run only when the transport declares the capability and are
skipped, with the reason, otherwise. Every transport handed out by the factory is closed when
the test ends. Topics are prefixed per test, so tests sharing one broker never see each other.

The contract tests cannot be silently replaced: a subclass that defines a method with the name
of a contract test fails at class creation, unless the override is deliberate and says why,
with ``@pytest.mark.xfail(reason=...)`` or ``@TransportConformance.overrides(reason=...)``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from eventforge.errors import TransportClosedError
from eventforge.message import Message
from eventforge.testing._transport_harness import (
    Collector,
    TransportFactory,
    TransportHarness,
    is_probe,
    seal_contract,
)
from eventforge.testing.payload_fidelity import (
    check_bytes_payload_arrives_as_bytes,
    check_json_values_arrive_unchanged,
)
from eventforge.transport import Capability, Transport

__all__ = ["Collector", "TransportConformance", "TransportFactory"]


class TransportConformance(TransportHarness):
    """The Transport contract as tests: subclass it and provide a ``make_transport`` fixture.

    Class attributes a subclass may tune: ``delivery_timeout`` (how long a test waits for a
    message that must arrive), ``probe_interval`` (how often a probe is resent while a
    subscription propagates through a broker) and ``absence_timeout`` (how long a receive that
    must come back empty waits).
    """

    # -- send / subscribe ------------------------------------------------------------------

    test_json_values_arrive_unchanged = check_json_values_arrive_unchanged
    test_bytes_payload_arrives_as_bytes = check_bytes_payload_arrives_as_bytes

    def test_subscriber_receives_sent_message(self) -> None:
        """A subscriber receives a sent message with topic, payload, id, reply_to, correlation_id intact."""
        t = self.new_transport()
        topic = self.topic("orders.created")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        sent = Message(
            topic,
            {"order": 7, "items": ["a", "b"]},
            reply_to=self.topic("replies"),
            correlation_id="corr-1",
        )
        t.send(sent)
        assert got.wait_for_count(1, self.delivery_timeout), "the message never arrived"
        (received,) = got.messages
        assert received.topic == sent.topic
        assert received.id == sent.id
        assert received.payload == sent.payload
        assert received.reply_to == sent.reply_to
        assert received.correlation_id == sent.correlation_id
        assert abs(received.timestamp - sent.timestamp) < 1e-3

    def test_headers_preserved(self) -> None:
        """HEADERS: str, int, float and bool header values reach the subscriber unchanged."""
        t = self.new_transport()
        self.require(t, Capability.HEADERS)
        topic = self.topic("with.headers")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        headers = {"trace": "abc-123", "attempt": 3, "weight": 0.5, "urgent": True}
        t.send(Message(topic, "x", dict(headers)))
        assert got.wait_for_count(1, self.delivery_timeout)
        received = got.messages[0].headers
        for key, value in headers.items():
            assert received.get(key) == value, f"header {key!r}: {received.get(key)!r}"
            assert type(received.get(key)) is type(value)

    def test_every_subscriber_gets_a_copy(self) -> None:
        """Every subscription on a topic receives each message once."""
        t = self.new_transport()
        topic = self.topic("fanout")
        collectors = [self.subscribe(t, topic)[1] for _ in range(3)]
        self.sync(t, topic, *collectors)
        for n in range(5):
            t.send(Message(topic, n))
        for c in collectors:
            assert c.wait_for_count(5, self.delivery_timeout)
        # A later message proves no duplicate was still in flight.
        t.send(Message(topic, "end"))
        for c in collectors:
            assert c.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
            assert sorted(p for p in c.payloads() if p != "end") == [0, 1, 2, 3, 4]

    def test_not_delivered_to_non_matching(self) -> None:
        """A subscription never receives messages on topics that its pattern does not match."""
        t = self.new_transport()
        topic = self.topic("a.b")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        for other in ("a", "a.b.c", "a.bb", "b.b", "a.b2"):
            t.send(Message(self.topic(other), other))
        t.send(Message(topic, "sentinel"))
        assert got.wait_for(lambda c: "sentinel" in c.payloads(), self.delivery_timeout)
        assert got.payloads() == ["sentinel"]

    def test_single_wildcard(self) -> None:
        """WILDCARDS: ``*`` matches exactly one segment, at any position."""
        t = self.new_transport()
        self.require(t, Capability.WILDCARDS)
        _, tail = self.subscribe(t, self.topic("orders.*"))
        _, middle = self.subscribe(t, self.topic("orders.*.created"))
        self.sync(t, self.topic("orders.x.created"), middle)
        self.sync(t, self.topic("orders.x"), tail)
        for suffix in ("orders.eu", "orders.eu.created", "orders", "orders.eu.created.v2"):
            t.send(Message(self.topic(suffix), suffix))
        t.send(Message(self.topic("orders.end"), "end"))
        t.send(Message(self.topic("orders.end.created"), "end"))
        assert tail.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert middle.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert tail.payloads() == ["orders.eu", "end"]
        assert middle.payloads() == ["orders.eu.created", "end"]

    def test_double_wildcard(self) -> None:
        """WILDCARDS: a trailing ``**`` matches one or more further segments."""
        t = self.new_transport()
        self.require(t, Capability.WILDCARDS)
        _, got = self.subscribe(t, self.topic("orders.**"))
        self.sync(t, self.topic("orders.x"), got)
        for suffix in ("orders.eu", "orders.eu.created", "orders.eu.created.v2", "order.eu"):
            t.send(Message(self.topic(suffix), suffix))
        t.send(Message(self.topic("orders.end"), "end"))
        assert got.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert got.payloads() == [
            "orders.eu",
            "orders.eu.created",
            "orders.eu.created.v2",
            "end",
        ]

    def test_double_wildcard_matches_zero_segments(self) -> None:
        """WILDCARDS: ``a.**`` also matches ``a`` itself (``**`` is zero or more segments)."""
        t = self.new_transport()
        self.require(t, Capability.WILDCARDS)
        _, got = self.subscribe(t, self.topic("orders.**"))
        self.sync(t, self.topic("orders.x"), got)
        t.send(Message(self.topic("orders"), "bare"))
        t.send(Message(self.topic("orders.end"), "end"))
        assert got.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert got.payloads() == ["bare", "end"]

    def test_double_wildcard_in_the_middle(self) -> None:
        """WILDCARDS: ``a.**.z`` matches ``a.z``, ``a.b.z`` and ``a.b.c.z`` but not ``a.b``."""
        t = self.new_transport()
        self.require(t, Capability.WILDCARDS)
        _, got = self.subscribe(t, self.topic("a.**.z"))
        self.sync(t, self.topic("a.q.z"), got)
        for suffix in ("a.z", "a.b.z", "a.b.c.z", "a.b", "a.z.b", "b.z"):
            t.send(Message(self.topic(suffix), suffix))
        t.send(Message(self.topic("a.end.z"), "end"))
        assert got.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert got.payloads() == ["a.z", "a.b.z", "a.b.c.z", "end"]

    def test_unsubscribe(self) -> None:
        """``unsubscribe`` stops delivery and returns True; a second call returns False."""
        t = self.new_transport()
        topic = self.topic("unsub")
        sub_id, gone = self.subscribe(t, topic)
        _, stays = self.subscribe(t, topic)
        self.sync(t, topic, gone, stays)
        assert t.unsubscribe(sub_id) is True
        t.send(Message(topic, "after"))
        assert stays.wait_for(lambda c: "after" in c.payloads(), self.delivery_timeout)
        t.send(Message(topic, "sentinel"))
        assert stays.wait_for(lambda c: "sentinel" in c.payloads(), self.delivery_timeout)
        assert gone.payloads() == []
        assert t.unsubscribe(sub_id) is False
        assert t.unsubscribe("no-such-subscription") is False

    def test_order_per_publisher(self) -> None:
        """ORDERED: messages from one publisher reach a subscriber in publish order."""
        t = self.new_transport()
        self.require(t, Capability.ORDERED)
        topic = self.topic("ordered")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        for n in range(200):
            t.send(Message(topic, n))
        assert got.wait_for_count(200, self.delivery_timeout), f"only {len(got)} of 200 arrived"
        assert got.payloads() == list(range(200))

    def test_concurrent_publishers_lose_nothing(self) -> None:
        """Four threads sending at once: the subscriber gets every message exactly once."""
        t = self.new_transport()
        topic = self.topic("concurrent")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        errors: list[BaseException] = []

        def publish(worker: int) -> None:
            try:
                for n in range(50):
                    t.send(Message(topic, [worker, n]))
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert got.wait_for_count(200, self.delivery_timeout), f"only {len(got)} of 200 arrived"
        t.send(Message(topic, "end"))
        assert got.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        received = [tuple(p) for p in got.payloads() if p != "end"]
        assert sorted(received) == [(w, n) for w in range(4) for n in range(50)]

    def test_raising_callback_does_not_break_delivery(self) -> None:
        """A callback that raises neither stops delivery to the others nor breaks later sends."""
        t = self.new_transport()
        topic = self.topic("faulty")
        calls: list[Message] = []

        def explode(message: Message) -> None:
            calls.append(message)
            raise RuntimeError("subscriber failure (raised on purpose by the conformance suite)")

        t.subscribe(topic, explode)
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        t.send(Message(topic, 1))
        t.send(Message(topic, 2))
        assert got.wait_for_count(2, self.delivery_timeout)
        assert sorted(got.payloads()) == [1, 2]
        assert self.wait_for(lambda: len([m for m in calls if not is_probe(m)]) >= 2)

    def test_payload_types_round_trip(self) -> None:
        """Payloads of every JSON type (and nested ones) arrive equal (the same object if ZERO_COPY)."""
        t = self.new_transport()
        topic = self.topic("payloads")
        _, got = self.subscribe(t, topic)
        self.sync(t, topic, got)
        payloads: list[Any] = [
            {"a": 1, "b": [1, 2]},
            [1, "two", 3.5, None],
            "text with ünïcode ✓",
            "",
            42,
            -(2**53),
            3.25,
            True,
            False,
            None,
            {"nested": {"deeper": [{"x": [1, {"y": None}]}]}, "empty": {}, "list": []},
        ]
        sent = [Message(topic, payload) for payload in payloads]
        for message in sent:
            t.send(message)
        assert got.wait_for_count(len(sent), self.delivery_timeout)
        by_id = {m.id: m.payload for m in got.messages}
        for message in sent:
            assert message.id in by_id, f"payload {message.payload!r} never arrived"
            self.assert_payload_equal(t, message.payload, by_id[message.id])

    # -- receive ---------------------------------------------------------------------------

    def _receive_in_thread(
        self, transport: Transport, topic: str
    ) -> tuple[threading.Thread, list[Message | None]]:
        result: list[Message | None] = []

        def run() -> None:
            result.append(transport.receive(topic, timeout=self.delivery_timeout))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, result

    def test_receive_returns_message_sent_while_waiting(self) -> None:
        """``receive`` blocked on a topic returns a message sent to it while it waits."""
        t = self.new_transport()
        topic = self.topic("pull")
        thread, result = self._receive_in_thread(t, topic)
        self.publish_until(t, lambda n: Message(topic, {"n": n}), lambda: bool(result))
        thread.join(self.delivery_timeout)
        (message,) = result
        assert message is not None, "receive timed out although messages were sent"
        assert message.topic == topic
        assert isinstance(message.payload, dict)
        assert "n" in message.payload

    def test_receive_timeout_returns_none(self) -> None:
        """``receive`` on a quiet topic returns None once its timeout passes."""
        t = self.new_transport()
        assert t.receive(self.topic("quiet"), timeout=self.absence_timeout) is None

    def test_receive_async_returns_message_sent_while_waiting(self) -> None:
        """``receive_async`` awaiting a topic returns a message sent to it while it waits."""
        t = self.new_transport()
        topic = self.topic("pull.async")
        result: list[Message | None] = []

        def run() -> None:
            result.append(asyncio.run(t.receive_async(topic, timeout=self.delivery_timeout)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.publish_until(t, lambda n: Message(topic, {"n": n}), lambda: bool(result))
        thread.join(self.delivery_timeout)
        (message,) = result
        assert message is not None, "receive_async timed out although messages were sent"
        assert message.topic == topic

    def test_receive_async_timeout_returns_none(self) -> None:
        """``receive_async`` on a quiet topic returns None once its timeout passes."""
        t = self.new_transport()
        quiet = self.topic("quiet.async")
        assert asyncio.run(t.receive_async(quiet, timeout=self.absence_timeout)) is None

    def test_receive_async_does_not_block_the_loop(self) -> None:
        """While ``receive_async`` waits, other tasks on the same event loop keep running."""
        t = self.new_transport()
        quiet = self.topic("quiet.loop")

        async def main() -> int:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(tick())
            await t.receive_async(quiet, timeout=self.absence_timeout)
            ticker.cancel()
            return ticks

        assert asyncio.run(main()) >= 2, "the event loop was blocked while receive_async waited"

    def test_buffered_receive_returns_earlier_message(self) -> None:
        """BUFFERED_RECEIVE: a message nobody consumed, sent before ``receive``, is returned by it."""
        t = self.new_transport()
        self.require(t, Capability.BUFFERED_RECEIVE)
        topic = self.topic("buffered")
        sent = Message(topic, {"early": True})
        t.send(sent)
        received = t.receive(topic, timeout=self.delivery_timeout)
        assert received is not None
        assert received.id == sent.id
        assert received.payload == {"early": True}
        assert t.receive(topic, timeout=self.absence_timeout) is None, "returned twice"

    def test_buffered_receive_async_returns_earlier_message(self) -> None:
        """BUFFERED_RECEIVE: ``receive_async`` also returns a message sent before it was called."""
        t = self.new_transport()
        self.require(t, Capability.BUFFERED_RECEIVE)
        topic = self.topic("buffered.async")
        sent = Message(topic, "early")
        t.send(sent)
        received = asyncio.run(t.receive_async(topic, timeout=self.delivery_timeout))
        assert received is not None
        assert received.id == sent.id

    # -- groups ----------------------------------------------------------------------------

    def test_group_members_share_messages(self) -> None:
        """GROUPS: each message reaches exactly one member of a group; a plain subscriber gets all."""
        t = self.new_transport()
        self.require(t, Capability.GROUPS)
        topic = self.topic("jobs")
        members = [self.subscribe(t, topic, group="workers")[1] for _ in range(2)]
        _, everyone = self.subscribe(t, topic)
        self.sync(t, topic, everyone)

        def group_total() -> int:
            return sum(len(m) for m in members)

        count = 20
        for n in range(count):
            t.send(Message(topic, n))
        assert everyone.wait_for_count(count, self.delivery_timeout)
        assert self.wait_for(lambda: group_total() >= count), f"group got {group_total()}"
        t.send(Message(topic, "end"))
        assert everyone.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert self.wait_for(lambda: group_total() >= count + 1)
        group_payloads = [p for m in members for p in m.payloads()]
        assert sorted(p for p in group_payloads if p != "end") == list(range(count))
        assert group_payloads.count("end") == 1
        assert sorted(p for p in everyone.payloads() if p != "end") == list(range(count))

    # -- spaces ----------------------------------------------------------------------------

    def test_cross_transport_delivery(self) -> None:
        """CROSS_PROCESS: a message sent on one transport reaches a subscriber on another one."""
        a = self.new_transport()
        self.require(a, Capability.CROSS_PROCESS)
        b = self.new_transport()
        topic = self.topic("across")
        _, got = self.subscribe(b, topic)
        self.sync(a, topic, got)
        sent = Message(topic, {"from": "a"})
        a.send(sent)
        assert got.wait_for(
            lambda c: any(m.id == sent.id for m in c.messages), self.delivery_timeout
        )

    def test_independent_instances_are_isolated(self) -> None:
        """Two independent transports never see each other's messages."""
        shared = self.new_transport()
        other = self.new_independent_transport()
        topic = self.topic("isolated")
        _, here = self.subscribe(shared, topic)
        _, there = self.subscribe(other, topic)
        self.sync(shared, topic, here)
        self.sync(other, topic, there)
        other.send(Message(topic, "from-other"))
        shared.send(Message(topic, "from-shared"))
        other.send(Message(topic, "end"))
        shared.send(Message(topic, "end"))
        assert here.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert there.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert here.payloads() == ["from-shared", "end"]
        assert there.payloads() == ["from-other", "end"]

    # -- close and validation --------------------------------------------------------------

    def test_close_is_idempotent_and_final(self) -> None:
        """After ``close`` (which may be called twice) send/subscribe/receive raise TransportClosedError."""
        t = self.new_transport()
        topic = self.topic("closing")
        t.close()
        t.close()
        with pytest.raises(TransportClosedError):
            t.send(Message(topic, "late"))
        with pytest.raises(TransportClosedError):
            t.subscribe(topic, Collector())
        with pytest.raises(TransportClosedError):
            t.receive(topic, timeout=self.absence_timeout)

    def test_invalid_topic_on_send_raises_value_error(self) -> None:
        """Sending to an empty, malformed or wildcard topic raises ValueError."""
        t = self.new_transport()
        for bad in ("", "a..b", ".a", "a.", "a.*", "a.**", "a b", "a*"):
            with pytest.raises(ValueError):
                t.send(Message(bad, "x"))

    def test_invalid_pattern_on_subscribe_raises_value_error(self) -> None:
        """Subscribing with a malformed pattern (empty segment, partial wildcard) raises ValueError."""
        t = self.new_transport()
        for bad in ("", "a..b", "a*", "a.b*", "a b"):
            with pytest.raises(ValueError):
                t.subscribe(bad, Collector())


_CONTRACT = seal_contract(TransportConformance)
