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

import pytest

from eventforge.errors import TransportClosedError
from eventforge.testing._queue_pubsub import GroupContract, PubSubContract
from eventforge.testing._queue_requests import RequestReplyContract
from eventforge.testing._queue_rpc import RPCContract
from eventforge.testing._transport_harness import Collector, seal_contract

__all__ = ["QueueConformance"]


class QueueConformance(PubSubContract, GroupContract, RequestReplyContract, RPCContract):
    """Base class of a transport's MessageQueue/RPC conformance tests; provide ``make_transport``.

    The tests come by area (pub/sub, groups, request/reply, RPC) and the queue's lifecycle;
    the fixtures and helpers (``new_queue``, ``topic``, ``sync``, ``start_server``, ...) from
    the queue harness. Tunables: ``delivery_timeout`` (how long a test waits for what must
    arrive), ``probe_interval`` (how often probes are resent while subscriptions propagate) and
    ``absence_timeout`` (how long a request that must go unanswered waits).
    """

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
