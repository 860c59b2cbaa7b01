"""The MessageQueue / RPC conformance suite: what users rely on, over any transport.

Where :class:`~eventforge.testing.conformance.TransportConformance` checks the six-method
transport contract, :class:`QueueConformance` checks what is built on it: fan-out, competing
groups, request/reply, RPC calls, errors and timeouts, unsubscribe, close, the async twins and
coroutine handlers. A transport gets these tests by subclassing it with the same
``make_transport`` fixture it gives the transport suite::

    import pytest
    from eventforge.testing.queue_conformance import QueueConformance

    class TestMyTransportQueue(QueueConformance):
        @pytest.fixture
        def make_transport(self, my_server):
            return lambda: MyTransport(my_server.url)

Every queue a test makes gets its own transport from the factory (so on a network transport
the queues are separate clients of one server), and the queues and transports are closed when
the test ends. Subscriptions may take effect asynchronously on a broker, so tests wait for them
with probes and polling, never with blind sleeps. Tests of optional features are skipped, with
the reason, when the transport does not declare the capability. Contract tests cannot be
silently overridden (the same guard as the transport suite: mark a deliberate override with
``@pytest.mark.xfail(reason=...)`` or ``@QueueConformance.overrides(reason=...)``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from eventforge.errors import (
    MethodNotFound,
    NoRespondersError,
    RemoteError,
    RPCTimeout,
    TransportClosedError,
)
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer
from eventforge.testing._transport_harness import (
    PROBE_KEY,
    Collector,
    ContractGuard,
    TransportFactory,
    seal_contract,
)
from eventforge.testing.deadline_checks import check_expired_request_never_reaches_a_handler
from eventforge.testing.payload_fidelity import check_bytes_request_and_reply
from eventforge.transport import Capability, Transport

__all__ = ["QueueConformance"]


class QueueConformance(ContractGuard):
    """Base class of a transport's MessageQueue/RPC conformance tests; provide ``make_transport``.

    Tunables: ``delivery_timeout`` (how long a test waits for what must arrive),
    ``probe_interval`` (how often probes are resent while subscriptions propagate) and
    ``absence_timeout`` (how long a request that must go unanswered waits).
    """

    delivery_timeout: ClassVar[float] = 5.0
    probe_interval: ClassVar[float] = 0.05
    absence_timeout: ClassVar[float] = 0.2

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        """Return a factory of transports sharing one space. Subclasses must provide it."""
        pytest.fail(
            f"{type(self).__name__} must define a 'make_transport' fixture returning a "
            "zero-argument factory of transports that share one space"
        )

    @pytest.fixture
    def topic_prefix(self) -> str:
        """A topic prefix unique to this test, so tests on one broker never cross-talk."""
        return f"qconf.t{os.urandom(6).hex()}"

    @pytest.fixture(autouse=True)
    def _queue_space(self, make_transport: TransportFactory, topic_prefix: str) -> Iterator[None]:
        self._factory = make_transport
        self._prefix = topic_prefix
        self._queues: list[MessageQueue] = []
        self._transports: list[Transport] = []
        self._cleanups: list[Callable[[], None]] = []
        yield
        for cleanup in reversed(self._cleanups):
            cleanup()
        for queue in reversed(self._queues):
            queue.close()
        seen: set[int] = set()
        for transport in reversed(self._transports):
            if id(transport) not in seen:
                seen.add(id(transport))
                transport.close()

    # -- helpers ---------------------------------------------------------------------------

    def new_queue(self, **options: Any) -> MessageQueue:
        """Return a MessageQueue on a new transport from the factory; closed at teardown."""
        transport = self._factory()
        if not isinstance(transport, Transport):
            pytest.fail(f"make_transport() returned {transport!r}, not a Transport")
        self._transports.append(transport)
        queue = MessageQueue(transport, close_transport=False, **options)
        self._queues.append(queue)
        return queue

    def topic(self, suffix: str) -> str:
        """Return ``suffix`` under this test's unique prefix."""
        return f"{self._prefix}.{suffix}"

    def service(self, name: str) -> str:
        """Return an RPC service name unique to this test."""
        return f"{name}-{self._prefix.rsplit('.', 1)[-1]}"

    def require(self, queue: MessageQueue, capability: str) -> None:
        """Skip the test unless the queue's transport declares ``capability``."""
        if not queue.transport.has(capability):
            pytest.skip(
                f"{type(queue.transport).__name__} does not declare the {capability!r} capability"
            )

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Poll ``predicate`` until it holds; return whether it did within ``timeout``."""
        deadline = time.monotonic() + (self.delivery_timeout if timeout is None else timeout)
        delay = 0.001
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    def sync(self, queue: MessageQueue, topic: str, *collectors: Collector) -> None:
        """Publish probes to ``topic`` until every collector saw one: the subscriptions are live."""
        deadline = time.monotonic() + self.delivery_timeout
        n = 0
        while True:
            queue.publish(topic, {PROBE_KEY: n})
            n += 1
            if self.wait_for(lambda: all(c.probes > 0 for c in collectors), self.probe_interval):
                return
            if time.monotonic() >= deadline:
                pytest.fail(f"subscriptions on {topic!r} did not become live after {n} probes")

    def wait_for_responder(self, queue: MessageQueue, topic: str) -> None:
        """Send requests to ``topic`` until one is answered: the responder is reachable."""
        deadline = time.monotonic() + self.delivery_timeout
        while True:
            try:
                if queue.request(topic, {PROBE_KEY: 0}, timeout=self.probe_interval) is not None:
                    return
            except NoRespondersError:
                time.sleep(self.probe_interval)
            if time.monotonic() >= deadline:
                pytest.fail(f"nothing answered requests on {topic!r}")

    def start_server(
        self, queue: MessageQueue, service: str, **methods: Callable[..., Any]
    ) -> RPCServer:
        """Serve ``methods`` (plus ``ping``) under ``service``; stopped at teardown."""
        server = RPCServer(queue, service_name=service)
        server.add_method("ping", lambda: "pong")
        for name, func in methods.items():
            server.add_method(name, func)
        server.serve(blocking=False)
        self._cleanups.append(server.stop)
        return server

    def wait_until_served(self, client: RPCClient, until: Callable[[], bool] | None = None) -> None:
        """Call ``ping`` until it answers (and ``until()`` holds): the server(s) are reachable."""
        deadline = time.monotonic() + self.delivery_timeout
        while True:
            try:
                if client.call("ping", timeout=self.probe_interval) == "pong" and (
                    until is None or until()
                ):
                    return
            except (RPCTimeout, NoRespondersError):
                time.sleep(self.probe_interval / 5)
            if time.monotonic() >= deadline:
                pytest.fail(f"RPC service {client.service_name!r} never answered ping")

    # -- pub/sub ---------------------------------------------------------------------------

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

    # -- groups ----------------------------------------------------------------------------

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

    # -- request/reply -----------------------------------------------------------------------

    test_bytes_request_and_reply = check_bytes_request_and_reply

    def test_request_gets_the_reply(self) -> None:
        """``request`` returns the responder's ``reply``, correlated to the request."""
        requester, responder = self.new_queue(), self.new_queue()
        topic = self.topic("math.add")

        def add(message: Message) -> None:
            payload = message.payload
            if isinstance(payload, dict) and PROBE_KEY in payload:
                responder.reply(message, "probe")
                return
            responder.reply(message, payload["a"] + payload["b"], served_by="responder")

        responder.subscribe(topic, add)
        self.wait_for_responder(requester, topic)
        reply = requester.request(topic, {"a": 10, "b": 20}, timeout=self.delivery_timeout)
        assert reply is not None
        assert reply.payload == 30
        if requester.transport.has(Capability.HEADERS):
            assert reply.headers.get("served_by") == "responder"
        assert requester.pending_requests == 0

    def test_request_async_gets_the_reply(self) -> None:
        """``request_async`` and ``reply_async`` answer without blocking the event loop."""
        requester, responder = self.new_queue(), self.new_queue()
        topic = self.topic("echo")

        async def echo(message: Message) -> None:
            await responder.reply_async(message, message.payload)

        responder.subscribe(topic, echo)
        self.wait_for_responder(requester, topic)

        async def main() -> list[Any]:
            replies = await asyncio.gather(
                *(
                    requester.request_async(topic, n, timeout=self.delivery_timeout)
                    for n in range(5)
                )
            )
            return [r.payload if r is not None else None for r in replies]

        assert asyncio.run(main()) == list(range(5))
        assert requester.pending_requests == 0

    def test_unanswered_request_fails_fast_or_times_out_without_leaking(self) -> None:
        """A request to nobody fails fast where receivers are countable, else times out; no leak."""
        requester = self.new_queue()
        transport = requester.transport
        knows = transport.has(Capability.REQUEST_REPLY) or transport.counts_receivers()
        try:
            assert requester.request(self.topic("none"), "?", timeout=self.absence_timeout) is None
            assert not knows, "a transport that can count receivers must fail fast"
            assert requester.stats["requests_timed_out"] == 1
        except NoRespondersError:
            assert knows, "only a transport that can count receivers may report no responders"
        assert requester.pending_requests == 0

    def test_request_past_its_deadline_never_reaches_a_handler(self) -> None:
        """A request that timed out in a busy handler's backlog is skipped and counted, not run."""
        server, client = self.new_queue(), self.new_queue()
        check_expired_request_never_reaches_a_handler(
            server, client, self.topic("deadline"), wait=self.delivery_timeout
        )

    def test_reply_needs_a_request(self) -> None:
        """Replying to a message that was published (no reply_to) raises ValueError."""
        queue = self.new_queue()
        with pytest.raises(ValueError, match="reply_to"):
            queue.reply(Message(self.topic("plain"), "x"), "answer")

    # -- RPC -------------------------------------------------------------------------------

    def test_rpc_call_returns_the_result(self) -> None:
        """An RPC call by name, positional or keyword, or by attribute, returns the result."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("calc")
        self.start_server(server_queue, service, add=lambda a, b: a + b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        assert client.call("add", 10, 20) == 30
        assert client.add(a=5, b=6) == 11
        assert client.call("add", [1], [2]) == [1, 2]

    def test_rpc_call_async_returns_the_result(self) -> None:
        """``call_async`` returns the result and never blocks the event loop."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("acalc")
        self.start_server(server_queue, service, mul=lambda a, b: a * b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)

        async def main() -> list[Any]:
            return list(await asyncio.gather(*(client.call_async("mul", n, 2) for n in range(4))))

        assert asyncio.run(main()) == [0, 2, 4, 6]

    def test_rpc_remote_exception_raises_remote_error(self) -> None:
        """A method that raises makes the call raise RemoteError with type, message, traceback."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("failing")

        def fail(reason: str) -> None:
            raise ValueError(reason)

        self.start_server(server_queue, service, fail=fail)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        with pytest.raises(RemoteError) as info:
            client.fail("bad input")
        assert info.value.type_name == "ValueError"
        assert info.value.remote_message == "bad input"
        assert "ValueError: bad input" in info.value.traceback_text

    def test_rpc_unknown_method_raises_method_not_found(self) -> None:
        """Calling an unregistered name raises MethodNotFound listing the registered names."""
        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("known")
        self.start_server(server_queue, service, add=lambda a, b: a + b)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client)
        with pytest.raises(MethodNotFound) as info:
            client.call("subtract", 1, 2)
        assert info.value.available == ("add", "ping")

    def test_rpc_timeout_raises_and_late_reply_is_dropped(self) -> None:
        """A call slower than its timeout raises RPCTimeout; its late reply is dropped, no waiter left."""
        from eventforge.execution import ExecutionMode, Executor

        server_queue, client_queue = self.new_queue(), self.new_queue()
        service = self.service("slow")
        release = threading.Event()
        executor = Executor(mode=ExecutionMode.THREAD, max_workers=2)
        self._cleanups.append(lambda: executor.stop(wait=True))
        self._cleanups.append(release.set)
        server = RPCServer(server_queue, executor=executor, service_name=service)
        server.add_method("ping", lambda: "pong")
        server.add_method("wait", lambda: release.wait(self.delivery_timeout * 2))
        server.serve(blocking=False)
        self._cleanups.append(server.stop)
        client = RPCClient(client_queue, service_name=service)
        self.wait_until_served(client)
        late_before = client_queue.stats["late_replies"]
        with pytest.raises(RPCTimeout) as info:
            client.call("wait", timeout=self.absence_timeout)
        assert info.value.method == "wait"
        assert client_queue.pending_requests == 0
        release.set()
        if not client_queue.transport.has(Capability.REQUEST_REPLY):
            assert self.wait_for(lambda: client_queue.stats["late_replies"] > late_before)
        assert client.ping() == "pong"

    def test_rpc_servers_with_one_service_name_compete(self) -> None:
        """GROUPS: two servers with one service name on two queues run each call exactly once."""
        first, second, client_queue = self.new_queue(), self.new_queue(), self.new_queue()
        self.require(first, Capability.GROUPS)
        service = self.service("pool")
        ran: dict[str, list[int]] = {"first": [], "second": []}
        pinged: dict[str, int] = {"first": 0, "second": 0}
        lock = threading.Lock()
        for name, queue in (("first", first), ("second", second)):

            def work(n: int, name: str = name) -> str:
                with lock:
                    ran[name].append(n)
                return name

            def ping(name: str = name) -> str:
                with lock:
                    pinged[name] += 1
                return "pong"

            server = self.start_server(queue, service, work=work)
            server.add_method("ping", ping, replace=True)
        client = RPCClient(client_queue, service_name=service, timeout=self.delivery_timeout)
        self.wait_until_served(client, until=lambda: all(pinged.values()))
        calls = 20
        answers = [client.work(n) for n in range(calls)]
        assert sorted(ran["first"] + ran["second"]) == list(range(calls)), ran
        assert answers.count("first") == len(ran["first"])
        assert answers.count("second") == len(ran["second"])

    # -- lifecycle ---------------------------------------------------------------------------

    def test_close_is_idempotent_and_final(self) -> None:
        """After ``close`` (callable twice) publish, subscribe and request raise TransportClosedError."""
        queue = self.new_queue()
        topic = self.topic("closing")
        queue.subscribe(topic, Collector())
        queue.close()
        queue.close()
        assert queue.closed
        with pytest.raises(TransportClosedError):
            queue.publish(topic, "late")
        with pytest.raises(TransportClosedError):
            queue.subscribe(topic, Collector())
        with pytest.raises(TransportClosedError):
            queue.request(topic, "late", timeout=self.absence_timeout)
        assert queue.stats["subscriptions"] == 0


_CONTRACT = seal_contract(QueueConformance)
