"""Work queues: competing consumers with explicit ack / nack, retries and a dead-letter queue.

:class:`WorkQueue` is the user-facing API. Where the items live is a *backend*: in-process by
default, or durable on a broker when the transport declares :attr:`Capability.DURABLE` (Redis
Streams, JetStream), so the same user code runs durably by changing only the transport.

The backend contract (:class:`WorkQueueBackend`) is deliberately small: put, fetch, ack, nack,
dead-letter, inspect and replay the dead letters. Retry *policy* (how many attempts, what
backoff) is decided by :class:`WorkQueue`, so every backend retries the same way.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventforge.config import configured_transport
from eventforge.deadlines import due_time
from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.message import Message, check_headers
from eventforge.topics import validate_topic
from eventforge.transport import ATTEMPT_HEADER as ATTEMPT_HEADER
from eventforge.transport import DEAD_LETTER_REASON_HEADER as DEAD_LETTER_REASON_HEADER
from eventforge.transport import NOT_BEFORE_HEADER as NOT_BEFORE_HEADER
from eventforge.transport import Capability, Transport, require_capability, run_sync
from eventforge.transport import DeadLetter as DeadLetter
from eventforge.transport import Delivery as Delivery
from eventforge.transport import RetryPolicy as RetryPolicy
from eventforge.transport import WorkQueueBackend as WorkQueueBackend
from eventforge.transports import MemoryWorkQueueBackend
from eventforge.transports.memory import MemoryTransport
from eventforge.workqueue._gate import PolicyGate

if TYPE_CHECKING:
    from typing_extensions import Self


__all__ = [
    "Consumer",
    "DeadLetter",
    "Delivery",
    "RetryPolicy",
    "WorkQueue",
    "WorkQueueBackend",
]

log = logging.getLogger("eventforge.workqueue")

# -- the user-facing queue ------------------------------------------------------------------------

Handler = Callable[[Message], Any]


class WorkQueue:
    """Competing consumers with explicit ack / nack, retries with backoff and a dead-letter queue.

    Each item goes to one consumer. A consumer acks it when done; a nack (or a handler that
    raises) redelivers it after the policy's backoff, and after ``retry.max_attempts`` failed
    attempts it goes to the dead-letter queue, where :meth:`dead_letters` shows it and
    :meth:`replay` puts it back. Backoff is scheduled, never slept on, so a failing item never
    holds up the others.

    Where the items live: ``backend=`` if given; else the transport's durable backend when it
    declares :attr:`~eventforge.transport.Capability.DURABLE` (Redis Streams, JetStream); with
    no transport, the configured one's (as for ``MessageQueue()``; the queue closes it); else,
    for no transport or a ``MemoryTransport``, this process's memory (at-least-once within the
    process: an item fetched and never settled is redelivered after ``visibility_timeout``).
    Any other transport is refused with :class:`~eventforge.errors.UnsupportedCapabilityError`.
    """

    def __init__(
        self,
        name: str = "default",
        transport: Transport | None = None,
        *,
        retry: RetryPolicy | None = None,
        backend: WorkQueueBackend | None = None,
        visibility_timeout: float = 300.0,
        max_size: int | None = 100_000,
    ) -> None:
        self.name = validate_topic(name)
        self.retry = retry if retry is not None else RetryPolicy()
        self._owned = configured_transport() if transport is None and backend is None else None
        try:
            inner = backend or _choose_backend(
                name, transport or self._owned, self.retry, visibility_timeout, max_size
            )
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise
        self._gate = PolicyGate(inner, self.retry)
        self._consumers: list[Consumer] = []
        self._closed = False

    @property
    def backend(self) -> WorkQueueBackend:
        """The backend that stores the items."""
        return self._gate.inner

    # -- producing --------------------------------------------------------------------------

    def put(
        self,
        payload: Any,
        *,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        **headers: Any,
    ) -> str:
        """Store a new item; return its message id once it is stored (durably, if durable).

        ``delay`` (seconds) or ``not_before`` (an aware ``datetime`` or Unix time) keeps the
        item from delivery until then; the backend keeps it (memory, Redis), never a
        consumer's memory, and a backend that cannot is refused with an error naming those
        that can. Header values must be str, int, float or bool (as for
        ``MessageQueue.publish``), so the same code works on every backend.
        """
        check_headers(headers)
        self._with_due(headers, delay, not_before)
        message = Message(self.name, payload, headers)
        self._gate.put(message)
        return message.id

    def put_many(
        self,
        payloads: Iterable[Any],
        *,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        **headers: Any,
    ) -> list[str]:
        """Store several items (each with the same headers and delay); return their ids once
        all are stored.

        On a durable backend this is one round trip per batch instead of one per item, the way
        to feed a queue fast. If the link fails midway, some items may be stored: the error says
        so, and the ids of a retried batch are new.
        """
        check_headers(headers)
        self._with_due(headers, delay, not_before)
        messages = [Message(self.name, payload, dict(headers)) for payload in payloads]
        if messages:
            self._gate.put_many(messages)
        return [message.id for message in messages]

    def _with_due(
        self, headers: dict[str, Any], delay: float | None, not_before: datetime | float | None
    ) -> None:
        due = due_time(delay, not_before)
        if due is None or due <= time.time():  # not delayed, or a time already past
            return
        if not getattr(self.backend, "delays", False):
            raise UnsupportedCapabilityError(
                f"work queue {self.name!r}: its backend ({type(self.backend).__name__}) cannot "
                "keep a delayed item; delays are kept by the memory, local://, Redis, AMQP, SQL "
                "and JetStream (nats-server 2.12 or later) work queues",
                transport=type(self.backend).__name__,
                capability="delays",
            )
        headers[NOT_BEFORE_HEADER] = due

    async def put_async(
        self,
        payload: Any,
        *,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        **headers: Any,
    ) -> str:
        """The awaitable twin of :meth:`put` (a durable backend's round trip runs off-loop)."""
        if not self._gate.durable:
            return self.put(payload, delay=delay, not_before=not_before, **headers)
        return await asyncio.to_thread(
            functools.partial(self.put, delay=delay, not_before=not_before, **headers), payload
        )

    # -- pulling ----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Delivery | None:
        """Take the next item, waiting up to ``timeout``; settle it with ``ack`` or ``nack``.

        ``delivery.nack()`` follows the retry policy (backoff, then the dead-letter queue);
        ``nack(delay=s)`` picks the delay; ``nack(requeue=False)`` dead-letters at once.
        """
        deliveries = self._gate.fetch(1, timeout)
        return deliveries[0] if deliveries else None

    async def get_async(self, timeout: float | None = None) -> Delivery | None:
        """The awaitable twin of :meth:`get`: waits in short slices on a worker thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = 0.05
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                slice_ = min(slice_, remaining)
            fetch = _AbandonableFetch(self, slice_)
            try:
                delivery = await asyncio.to_thread(fetch.run)
            except asyncio.CancelledError:
                # The fetch goes on in its thread: an item it takes has nobody to handle it
                # now, so it is given back at once instead of staying in flight until its
                # lease runs out.
                fetch.abandon()
                raise
            if delivery is not None:
                return delivery

    def _give_back(self, delivery: Delivery) -> None:
        """Return an item fetched for a caller that went away (attempt + 1, not a retry)."""
        if delivery.settled:
            return
        delivery.settled = True
        try:
            self._gate.inner.nack(delivery, delay=0.0)
        except Exception:
            log.warning(
                "work queue %r: could not give back message %s after a cancelled get_async; "
                "it is redelivered when its lease runs out",
                self.name,
                delivery.message.id,
                exc_info=True,
            )

    # -- pushing ----------------------------------------------------------------------------

    def consume(self, handler: Handler, *, concurrency: int = 1) -> Consumer:
        """Run ``handler(message)`` on ``concurrency`` worker threads until ``Consumer.stop``.

        A handler that returns acks the item; one that raises nacks it (logged and counted in
        ``stats["handler_errors"]``). Coroutine handlers run on the shared background loop.
        """
        if self._closed:
            raise TransportClosedError(f"work queue {self.name!r} is closed")
        consumer = Consumer(self, handler, concurrency)
        self._consumers.append(consumer)
        return consumer

    def process(self, handler: Handler, max_items: int | None = None, timeout: float = 0.5) -> int:
        """Handle items on the calling thread until ``max_items`` or ``timeout`` s of idleness.

        Returns how many items were handled (acked or not). Handy in scripts and tests.
        """
        handled = 0
        while max_items is None or handled < max_items:
            delivery = self.get(timeout)
            if delivery is None:
                break
            self._handle(handler, delivery)
            handled += 1
        return handled

    def _handle(self, handler: Handler, delivery: Delivery) -> bool:
        try:
            if inspect.iscoroutinefunction(handler):
                run_sync(handler(delivery.message))
            else:
                handler(delivery.message)
        except Exception:
            self._gate.count("handler_errors")
            log.warning(
                "work queue %r: handler %r failed on attempt %d of message %s",
                self.name,
                handler,
                delivery.attempt,
                delivery.message.id,
                exc_info=True,
            )
            delivery.nack()
            return False
        delivery.ack()
        return True

    # -- dead letters -----------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The items that exhausted their attempts or were rejected, oldest first."""
        return self._gate.dead_letters(limit)

    def replay(self, items: Iterable[DeadLetter | Any] | None = None) -> int:
        """Put dead letters back as fresh items (attempt 1): all, or the given ones / tokens."""
        if items is None:
            return self._gate.replay(None)
        tokens = [i.token if isinstance(i, DeadLetter) else i for i in items]
        return self._gate.replay(tokens)

    # -- introspection and lifecycle --------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """``pending``, ``in_flight``, ``acked``, ``retried``, ``dead_lettered``, ... counters."""
        return self._gate.stats()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or in flight; return False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            stats = self._gate.stats()
            if not stats["pending"] and not stats["in_flight"]:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    async def join_async(self, timeout: float | None = None) -> bool:
        """The awaitable twin of :meth:`join`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            stats = self._gate.stats()
            if not stats["pending"] and not stats["in_flight"]:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Stop every consumer, then close the backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for consumer in self._consumers:
            consumer.stop()
        self._gate.close()
        if self._owned is not None:  # the configured transport this queue took
            self._owned.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkQueue({self.name!r}, backend={type(self.backend).__name__})"


class _AbandonableFetch:
    """One off-loop ``get`` whose awaiting caller may be cancelled at any moment.

    Whichever comes second, the fetch finishing or the caller abandoning it, gives back an item
    that was fetched, so that no delivery is left with nobody to settle it.
    """

    __slots__ = ("_abandoned", "_lock", "_queue", "_taken", "_timeout")

    def __init__(self, queue: WorkQueue, timeout: float) -> None:
        self._queue = queue
        self._timeout = timeout
        self._lock = threading.Lock()
        self._abandoned = False
        self._taken: Delivery | None = None

    def run(self) -> Delivery | None:
        delivery = self._queue.get(self._timeout)
        with self._lock:
            if not self._abandoned:
                self._taken = delivery
                return delivery
        if delivery is not None:
            self._queue._give_back(delivery)
        return None

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            taken, self._taken = self._taken, None
        if taken is not None:
            self._queue._give_back(taken)


class Consumer:
    """Worker threads that take items from a :class:`WorkQueue` and run a handler on each."""

    poll_interval = 0.1
    thread_name = "eventforge-wq"

    def __init__(self, queue: WorkQueue, handler: Handler, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.queue = queue
        self.handler = handler
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.handled = 0
        self.failed = 0
        self.fetch_failures = 0
        """Fetches that failed in a row (0 once a fetch succeeds again); see ``last_fetch_error``."""
        self.last_fetch_error: str | None = None
        self._threads = [
            threading.Thread(
                target=self._run, name=f"{self.thread_name}-{queue.name}-{i}", daemon=True
            )
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        gate = self.queue._gate
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                deliveries = gate.fetch(1, self.poll_interval)
            except TransportClosedError:
                return
            except Exception as exc:
                log.warning("work queue %r: fetch failed", self.queue.name, exc_info=True)
                self.fetch_failures += 1
                self.last_fetch_error = f"{type(exc).__name__}: {exc}"
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.fetch_failures = 0
            backoff = 0.05
            for delivery in deliveries:
                self._process(delivery)

    def _process(self, delivery: Delivery) -> None:
        """Run the handler on one delivery and settle it (subclasses change what "run" means)."""
        ok = self.queue._handle(self.handler, delivery)
        with self._lock:
            self.handled += 1
            self.failed += not ok

    @property
    def running(self) -> bool:
        """True while at least one worker thread is alive."""
        return any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop taking items; wait up to ``timeout`` for the handlers that are running."""
        self._stopping.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _choose_backend(
    name: str,
    transport: Transport | None,
    retry: RetryPolicy,
    visibility_timeout: float,
    max_size: int | None,
) -> WorkQueueBackend:

    if transport is not None and transport.has(Capability.DURABLE):
        return transport.work_queue_backend(name, retry)
    if transport is None or isinstance(transport, MemoryTransport):
        return MemoryWorkQueueBackend(
            name, visibility_timeout=visibility_timeout, max_size=max_size
        )
    require_capability(transport, Capability.DURABLE, feature=f"WorkQueue {name!r}")
    raise AssertionError("unreachable")  # pragma: no cover
