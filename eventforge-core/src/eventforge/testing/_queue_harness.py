"""The fixtures and helpers the MessageQueue / RPC conformance tests stand on.

:mod:`eventforge.testing.queue_conformance` holds the contract itself; this module holds what
its tests use: queues on transports from the ``make_transport`` factory (closed when a test
ends), topics and service names unique to a test, and waits that probe instead of sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from eventforge.errors import NoRespondersError, RPCTimeout
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer
from eventforge.testing._transport_harness import (
    PROBE_KEY,
    Collector,
    ContractGuard,
    TransportFactory,
)
from eventforge.transport import Transport

__all__ = ["QueueHarness"]


class QueueHarness(ContractGuard):
    """Fixtures and helpers of the queue conformance tests; subclasses provide ``make_transport``.

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
