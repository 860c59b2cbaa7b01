"""MessageQueue review: closing the queue concurrently with request/subscribe leaves nothing behind."""

from __future__ import annotations

import threading

import pytest
from eventforge.errors import TransportClosedError
from eventforge.queue import MessageQueue
from eventforge.transports.memory import MemoryTransport


def test_request_racing_close_is_woken_not_left_waiting() -> None:
    transport = MemoryTransport()
    queue = MessageQueue(transport, close_transport=False)
    ensure_inbox = queue._ensure_inbox

    def closed_meanwhile() -> object:
        # Another thread closes the queue just after the request found its inbox.
        inbox = ensure_inbox()
        queue.close()
        return inbox

    queue._ensure_inbox = closed_meanwhile  # type: ignore[method-assign]
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(queue.request("svc.echo", 1, timeout=None))
        except TransportClosedError as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(10)
    try:
        assert not asker.is_alive(), "request(timeout=None) hangs after a concurrent close"
        assert len(outcome) == 1
        assert isinstance(outcome[0], TransportClosedError)
        assert queue.pending_requests == 0
    finally:
        transport.close()  # wakes nothing here, but frees the transport


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
