"""The queue conformance tests of publish/subscribe: fan-out, headers, wildcards,
unsubscribe, failing and coroutine handlers, the async twins, and groups."""

from __future__ import annotations

import asyncio

from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.testing._queue_harness import QueueHarness
from eventforge.testing._transport_harness import Collector
from eventforge.transport import Capability

__all__ = ["GroupContract", "PubSubContract"]


class PubSubContract(QueueHarness):
    """Every handler of a topic gets each message as published; a failing one harms no other."""

    def test_fan_out_every_handler_gets_each_message(self) -> None:
        """Every handler subscribed to a topic receives each published message once."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        topic = self.topic("fanout")
        collectors = [Collector() for _ in range(3)]
        for collector in collectors:
            subscriber.subscribe(topic, collector)
        self.sync(publisher, topic, *collectors)
        for n in range(10):
            publisher.publish(topic, n)
        for collector in collectors:
            assert collector.wait_for_count(10, self.delivery_timeout)
        self.wait_for(lambda: False, self.absence_timeout)
        for collector in collectors:
            assert collector.payloads() == list(range(10))

    def test_handler_sees_topic_payload_and_headers(self) -> None:
        """A handler receives the message with its topic, payload, id and headers."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        self.require(publisher, Capability.HEADERS)
        topic = self.topic("details")
        got = Collector()
        subscriber.subscribe(topic, got)
        self.sync(publisher, topic, got)
        message_id = publisher.publish(topic, {"user": "alice"}, tenant="eu", attempt=2)
        assert got.wait_for_count(1, self.delivery_timeout)
        message = got.messages[0]
        assert (message.topic, message.id, message.payload) == (
            topic,
            message_id,
            {"user": "alice"},
        )
        assert message.headers.get("tenant") == "eu"
        assert message.headers.get("attempt") == 2

    def test_wildcard_subscription(self) -> None:
        """WILDCARDS: ``*`` matches one segment and ``**`` any number, through the queue."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        self.require(subscriber, Capability.WILDCARDS)
        one, many = Collector(), Collector()
        subscriber.subscribe(self.topic("events.*"), one)
        subscriber.subscribe(self.topic("events.**"), many)
        self.sync(publisher, self.topic("events.probe"), one, many)
        for suffix in ("events.a", "events.a.b", "other.a", "end"):
            publisher.publish(self.topic(suffix), suffix)
        publisher.publish(self.topic("events.end"), "end")
        assert one.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert many.wait_for(lambda c: "end" in c.payloads(), self.delivery_timeout)
        assert one.payloads() == ["events.a", "end"]
        assert many.payloads() == ["events.a", "events.a.b", "end"]

    def test_unsubscribe_stops_delivery(self) -> None:
        """After ``unsubscribe`` (True once, then False) the handler receives nothing more."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        topic = self.topic("unsub")
        gone, stays = Collector(), Collector()
        gone_id = subscriber.subscribe(topic, gone)
        subscriber.subscribe(topic, stays)
        self.sync(publisher, topic, gone, stays)
        assert subscriber.unsubscribe(gone_id) is True
        assert subscriber.unsubscribe(gone_id) is False
        publisher.publish(topic, "after")
        assert stays.wait_for(lambda c: "after" in c.payloads(), self.delivery_timeout)
        self.wait_for(lambda: False, self.absence_timeout)
        assert gone.payloads() == []

    def test_raising_handler_is_isolated_and_counted(self) -> None:
        """A handler that raises is counted and reported; other handlers and the publisher go on."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        errors: list[tuple[BaseException, Message]] = []
        subscriber.error_hook = lambda exc, message, handler: errors.append((exc, message))
        topic = self.topic("isolation")

        def explode(message: Message) -> None:
            if message.payload == "boom":
                raise RuntimeError("handler failed")

        subscriber.subscribe(topic, explode)
        survivor = Collector()
        subscriber.subscribe(topic, survivor)
        self.sync(publisher, topic, survivor)
        publisher.publish(topic, "boom")
        publisher.publish(topic, "next")
        assert survivor.wait_for(lambda c: c.payloads() == ["boom", "next"], self.delivery_timeout)
        assert self.wait_for(lambda: subscriber.stats["handler_errors"] == 1)
        assert [(str(e), m.payload) for e, m in errors] == [("handler failed", "boom")]

    def test_coroutine_handler_runs(self) -> None:
        """A coroutine handler is awaited on an event loop and sees every message."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        topic = self.topic("coro")
        got = Collector()

        async def handler(message: Message) -> None:
            await asyncio.sleep(0)
            got(message)

        subscriber.subscribe(topic, handler)
        self.sync(publisher, topic, got)
        publisher.publish(topic, "async")
        assert got.wait_for(lambda c: c.payloads() == ["async"], self.delivery_timeout)

    def test_publish_async_and_receive_async(self) -> None:
        """``publish_async`` delivers like ``publish``; ``receive_async`` awaits without blocking."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        topic = self.topic("aio")
        got = Collector()
        subscriber.subscribe(topic, got)
        self.sync(publisher, topic, got)

        async def main() -> Message | None:
            message_id = await publisher.publish_async(topic, "hello")
            assert got.wait_for(lambda c: c.payloads() == ["hello"], self.delivery_timeout)
            assert got.messages[0].id == message_id
            return await subscriber.receive_async(self.topic("nobody"), timeout=0.05)

        assert asyncio.run(main()) is None


class GroupContract(QueueHarness):
    """Each message reaches one member of a group, within a queue and across queues."""

    def test_group_delivers_each_message_once_within_a_queue(self) -> None:
        """Each message reaches exactly one member of a group; a plain handler still gets all."""
        publisher, subscriber = self.new_queue(), self.new_queue()
        topic = self.topic("jobs")
        members = [Collector(), Collector()]
        for member in members:
            subscriber.subscribe(topic, member, group="workers")
        everyone = Collector()
        subscriber.subscribe(topic, everyone)
        self.sync(publisher, topic, everyone, *members)
        self._assert_group_once(publisher, topic, members, everyone)

    def test_group_delivers_each_message_once_across_queues(self) -> None:
        """GROUPS: members of one group on two queues share the messages, each delivered once."""
        publisher = self.new_queue()
        self.require(publisher, Capability.GROUPS)
        first, second = self.new_queue(), self.new_queue()
        topic = self.topic("shared.jobs")
        members = [Collector(), Collector()]
        first.subscribe(topic, members[0], group="workers")
        second.subscribe(topic, members[1], group="workers")
        everyone = Collector()
        first.subscribe(topic, everyone)
        self.sync(publisher, topic, everyone, *members)
        self._assert_group_once(publisher, topic, members, everyone)

    def _assert_group_once(
        self, publisher: MessageQueue, topic: str, members: list[Collector], everyone: Collector
    ) -> None:
        count = 20
        for n in range(count):
            publisher.publish(topic, n)
        assert everyone.wait_for_count(count, self.delivery_timeout)
        assert self.wait_for(lambda: sum(len(m) for m in members) >= count)
        self.wait_for(lambda: False, self.absence_timeout)
        shared = sorted(p for m in members for p in m.payloads())
        assert shared == list(range(count)), f"group got {shared}"
        assert everyone.payloads() == list(range(count))
