"""The conformance suite of typed events, middleware, header routing, caches, typed RPC and rendezvous.

These features live in the queue, above the transport, so every transport should pass the same
tests. A transport gets them by subclassing :class:`EventsConformance` with the ``make_transport``
fixture it gives the other suites::

    import pytest
    from eventforge.testing.events_conformance import EventsConformance

    class TestMyTransportEvents(EventsConformance):
        @pytest.fixture
        def make_transport(self, my_server):
            return lambda: MyTransport(my_server.url)

Every queue a test makes gets its own transport from the factory. Subscriptions may become live
asynchronously on a broker, so tests publish probes until they arrive instead of sleeping.
Contract tests cannot be silently overridden (see :class:`~eventforge.testing.queue_conformance.
QueueConformance`).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from eventforge.dispatch.middleware import ContextHeader
from eventforge.events import EventValidationError, event, event_listener
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.queue.cache import WaitMode
from eventforge.rpc import RPCClient, RPCServer
from eventforge.testing._transport_harness import ContractGuard, TransportFactory, seal_contract
from eventforge.transport import Capability, Transport

__all__ = ["EventsConformance"]


@event("conformance.order.created")
class ConformanceOrder(BaseModel):
    """A pydantic event of the suite."""

    order_id: int
    total: float


@event("conformance.hello")
@dataclass
class ConformanceHello:
    """A dataclass event of the suite."""

    world: str


@dataclass
class ConformanceTotal:
    """A typed RPC result of the suite."""

    total: float


_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("conformance_tenant")


class EventsConformance(ContractGuard):
    """Base class of a transport's events conformance tests; provide ``make_transport``."""

    delivery_timeout: ClassVar[float] = 10.0

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        """Return a factory of transports sharing one space. Subclasses must provide it."""
        pytest.fail(
            f"{type(self).__name__} must define a 'make_transport' fixture returning a "
            "zero-argument factory of transports that share one space"
        )

    @pytest.fixture(autouse=True)
    def _events_space(self, make_transport: TransportFactory) -> Iterator[None]:
        self._factory = make_transport
        self._prefix = f"evconf.t{os.urandom(6).hex()}"
        self._queues: list[MessageQueue] = []
        self._transports: list[Transport] = []
        yield
        for queue in reversed(self._queues):
            queue.close()
        seen: set[int] = set()
        for transport in reversed(self._transports):
            if id(transport) not in seen:
                seen.add(id(transport))
                transport.close()

    # -- helpers ---------------------------------------------------------------------------

    def new_queue(self, **options: Any) -> MessageQueue:
        """A MessageQueue on a new transport from the factory; closed at teardown."""
        transport = self._factory()
        self._transports.append(transport)
        queue = MessageQueue(transport, close_transport=False, **options)
        self._queues.append(queue)
        return queue

    def topic(self, suffix: str) -> str:
        """``suffix`` under this test's unique prefix."""
        return f"{self._prefix}.{suffix}"

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Poll ``predicate`` until it holds; return whether it did within the timeout."""
        deadline = time.monotonic() + (self.delivery_timeout if timeout is None else timeout)
        pause = threading.Event()
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            pause.wait(0.005)
        return True

    def make_live(self, publisher: MessageQueue, *subscribers: MessageQueue) -> None:
        """Probe until every subscriber's subscriptions made so far are live."""
        seen = [threading.Event() for _ in subscribers]
        topic = self.topic("probe")
        ids = [
            queue.subscribe(topic, lambda m, done=done: done.set())
            for queue, done in zip(subscribers, seen, strict=True)
        ]
        deadline = time.monotonic() + self.delivery_timeout
        while not all(done.is_set() for done in seen):
            if time.monotonic() > deadline:
                pytest.fail("subscriptions never became live")
            publisher.publish(topic, None)
            self.wait_for(lambda: all(done.is_set() for done in seen), 0.05)
        for queue, handler_id in zip(subscribers, ids, strict=True):
            queue.unsubscribe(handler_id)

    # -- typed events ------------------------------------------------------------------------

    @pytest.mark.parametrize("use_async", [False, True])
    def test_typed_events_arrive_validated_and_invalid_ones_are_rejected(
        self, use_async: bool
    ) -> None:
        """Pydantic and dataclass events reach sync and async typed handlers; invalid ones are counted."""
        errors: list[BaseException] = []
        sender = self.new_queue()
        receiver = self.new_queue(error_hook=lambda exc, msg, handler: errors.append(exc))
        got: list[Any] = []
        if use_async:

            async def on_order(evt: ConformanceOrder) -> None:
                got.append(evt)

            async def on_hello(evt: ConformanceHello) -> None:
                got.append(evt)
        else:

            def on_order(evt: ConformanceOrder) -> None:  # type: ignore[misc]
                got.append(evt)

            def on_hello(evt: ConformanceHello) -> None:  # type: ignore[misc]
                got.append(evt)

        receiver.subscribe(ConformanceOrder, on_order)
        receiver.subscribe(ConformanceHello, on_hello)
        self.make_live(sender, receiver)
        sender.publish("conformance.order.created", {"order_id": "not a number", "total": 1})
        sender.publish(ConformanceOrder(order_id=1, total=9.5))
        sender.publish(ConformanceHello("world"))
        assert self.wait_for(lambda: len(got) == 2), got
        assert ConformanceOrder(order_id=1, total=9.5) in got
        assert ConformanceHello("world") in got
        assert self.wait_for(lambda: receiver.stats["rejected"] == 1)
        assert [type(e) for e in errors] == [EventValidationError]
        assert receiver.stats["handler_errors"] == 0

    def test_listeners_of_one_name_share_per_process_listeners_each_get_all(self) -> None:
        """Listeners with one name form a group across queues; per_process ones get every event."""
        shared: list[tuple[str, int]] = []
        every: list[tuple[str, int]] = []

        @event_listener(ConformanceOrder, name=f"billing-{self._prefix.rsplit('.', 1)[-1]}")
        class Billing:
            def __init__(self, tag: str) -> None:
                self.tag = tag

            def on(self, event: ConformanceOrder) -> None:
                shared.append((self.tag, event.order_id))
                # A handler that takes a while, as real ones do: a member that keeps up with the
                # publisher alone (on a busy machine the other may not be scheduled in time)
                # would otherwise take every event, which a group allows.
                time.sleep(0.02)

        @event_listener(ConformanceOrder, per_process=True)
        class Audit:
            def __init__(self, tag: str) -> None:
                self.tag = tag

            async def on(self, event: ConformanceOrder) -> None:
                every.append((self.tag, event.order_id))

        sender = self.new_queue()
        if not sender.transport.has(Capability.GROUPS):
            pytest.skip(f"{type(sender.transport).__name__} has no cross-queue groups")
        a, b = self.new_queue(), self.new_queue()
        for tag, queue in (("a", a), ("b", b)):
            queue.listen(Billing(tag))
            queue.listen(Audit(tag))
        self.make_live(sender, a, b)
        for n in range(20):
            sender.publish(ConformanceOrder(order_id=n, total=1.0))
        assert self.wait_for(lambda: len(shared) >= 20 and len(every) >= 40)
        assert sorted(n for _, n in shared) == list(range(20))
        assert {tag for tag, _ in shared} == {"a", "b"}
        assert sorted(every) == sorted((t, n) for t in "ab" for n in range(20))

    # -- middleware and header routing -------------------------------------------------------

    @pytest.mark.parametrize("use_async", [False, True])
    def test_middleware_carries_a_header_from_publisher_to_handler(self, use_async: bool) -> None:
        """A ContextHeader pipeline sets the publisher's context variable around the handler."""
        sender = self.new_queue(middleware=[ContextHeader("tenant", _tenant)])
        receiver = self.new_queue(middleware=[ContextHeader("tenant", _tenant)])
        seen: list[str | None] = []
        if use_async:

            async def handler(message: Message) -> None:
                seen.append(_tenant.get(None))
        else:

            def handler(message: Message) -> None:  # type: ignore[misc]
                seen.append(_tenant.get(None))

        receiver.subscribe(self.topic("jobs"), handler)
        self.make_live(sender, receiver)

        def publish() -> None:
            _tenant.set("acme")
            sender.publish(self.topic("jobs"), {"n": 1})

        contextvars.copy_context().run(publish)
        assert self.wait_for(lambda: seen == ["acme"]), seen

    def test_header_match_all_and_any(self) -> None:
        """Subscriptions with a header match get only matching messages; the rest are counted."""
        sender = self.new_queue()
        receiver = self.new_queue()
        all_of: list[int] = []
        any_of: list[int] = []
        wanted = {"format": "pdf", "type": "report"}
        receiver.subscribe(self.topic("docs.*"), lambda m: all_of.append(m.payload), match=wanted)

        async def on_any(message: Message) -> None:
            any_of.append(message.payload)

        receiver.subscribe(self.topic("docs.*"), on_any, match=wanted, match_mode="any")
        self.make_live(sender, receiver)
        sender.publish(self.topic("docs.a"), 1, format="pdf", type="report", author="john")
        sender.publish(self.topic("docs.b"), 2, format="pdf", type="invoice")
        sender.publish(self.topic("docs.c"), 3, format="html")
        sender.publish(self.topic("docs.d"), 4, format="pdf", type="report")
        assert self.wait_for(lambda: len(all_of) == 2 and len(any_of) == 3)
        assert sorted(all_of) == [1, 4]
        assert sorted(any_of) == [1, 2, 4]
        assert self.wait_for(lambda: receiver.stats["filtered"] == 3)

    # -- caches, typed RPC, rendezvous ---------------------------------------------------------

    def test_cache_matches_replies_by_correlation_id(self) -> None:
        """A SubscriptionCache finds replies by predicate and by payload in any order."""
        server = self.new_queue()
        client = self.new_queue()

        def answer(message: Message) -> None:
            server.publish(
                message.payload["reply_to"],
                {"result": message.payload["n"] * 2},
                correlation_id=message.headers["correlation_id"],
            )

        server.subscribe(self.topic("rpc.requests"), answer, threaded=True)
        with client.cache(self.topic("rpc.replies")) as replies:
            self.make_live(client, server, client)
            for n in range(3):
                client.publish(
                    self.topic("rpc.requests"),
                    {"n": n, "reply_to": self.topic("rpc.replies")},
                    correlation_id=f"c{n}",
                )
            reply = replies.wait_for_one(
                lambda m: m.headers.get("correlation_id") == "c1", self.delivery_timeout
            )
            assert reply is not None
            assert reply.payload == {"result": 2}
            rest = replies.wait_for_many(
                [{"result": 0}, {"result": 4}], WaitMode.ALL_IN_RANDOM_ORDER, self.delivery_timeout
            )
            assert len(rest) == 2

    def test_typed_rpc_round_trip(self) -> None:
        """RPC methods take models validated by the server; call_typed returns the model."""
        server_queue = self.new_queue()
        client_queue = self.new_queue()
        service = f"shop-{self._prefix.rsplit('.', 1)[-1]}"
        server = RPCServer(server_queue, service_name=service)

        @server.register()
        def total(order: ConformanceOrder) -> ConformanceTotal:
            assert isinstance(order, ConformanceOrder)
            return ConformanceTotal(total=order.total * 2)

        server.serve(blocking=False)
        try:
            client = RPCClient(client_queue, service_name=service, timeout=1)
            deadline = time.monotonic() + self.delivery_timeout
            while True:
                try:
                    result = client.call_typed(
                        ConformanceTotal, "total", ConformanceOrder(order_id=1, total=2.5)
                    )
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            assert result == ConformanceTotal(total=5.0)
            assert type(result) is ConformanceTotal

            async def main() -> ConformanceTotal:
                return await client.call_typed_async(
                    ConformanceTotal, "total", {"order_id": 2, "total": 1}
                )

            assert asyncio.run(main()) == ConformanceTotal(total=2.0)
        finally:
            server.stop()

    def test_rendezvous_counts_each_participant_once(self) -> None:
        """wait_until_ready counts distinct participants, including those that announced first."""
        space = self._prefix.rsplit(".", 1)[-1]
        controller = self.new_queue()
        workers = [self.new_queue() for _ in range(3)]
        for worker in workers[:2]:
            worker.announce_ready(["worker"], space=space)
            worker.announce_ready(["worker"], space=space)
        assert controller.wait_until_ready({"worker": 3}, timeout=0.5, space=space) is False
        workers[2].announce_ready(["worker", "reporter"], space=space)
        assert controller.wait_until_ready(
            {"worker": 3, "reporter": 1}, timeout=self.delivery_timeout, space=space
        )
        from eventforge.queue.rendezvous import rendezvous_for

        assert rendezvous_for(controller, space).counts() == {"worker": 3, "reporter": 1}


_CONTRACT = seal_contract(EventsConformance)
