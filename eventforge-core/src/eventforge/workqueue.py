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
import inspect
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._queue_requests import _check_headers
from .errors import TransportClosedError
from .message import Message
from .topics import validate_topic

if TYPE_CHECKING:
    from typing_extensions import Self

    from .transport import Transport

__all__ = [
    "Consumer",
    "DeadLetter",
    "Delivery",
    "RetryPolicy",
    "WorkQueue",
    "WorkQueueBackend",
]

log = logging.getLogger("eventforge.workqueue")

ATTEMPT_HEADER = "x-eventforge-attempt"
DEAD_LETTER_REASON_HEADER = "x-eventforge-dead-letter-reason"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing item is retried and how long to wait in between.

    An item is delivered at most ``max_attempts`` times; after the last failed attempt it goes
    to the dead-letter queue. The delay before attempt ``n + 1`` is
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` with up to ``jitter`` (a
    fraction) added at random, so retries of many items do not arrive in lock-step.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 900.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            base = min(self.max_backoff, base * (1 + random.random() * self.jitter))
        return base

    def exhausted(self, attempt: int) -> bool:
        """Tell whether attempt number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts


@dataclass
class Delivery:
    """One delivery of a work item to a consumer.

    ``attempt`` is 1 on first delivery and grows with each redelivery. ``token`` is the
    backend's handle (a stream entry id, a JetStream message, ...). Call :meth:`ack` when the
    work is done or :meth:`nack` to have it retried; exactly one of them takes effect.
    """

    message: Message
    attempt: int
    queue: str
    token: Any = None
    backend: WorkQueueBackend | None = field(default=None, repr=False)
    settled: bool = False

    def ack(self) -> None:
        """Mark the work done; the item is removed for good."""
        if self.backend is not None and not self.settled:
            self.settled = True
            self.backend.ack(self)

    def nack(self, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Give the item back: redelivered after ``delay`` seconds, or dead-lettered."""
        if self.backend is not None and not self.settled:
            self.settled = True
            if requeue:
                self.backend.nack(self, delay=delay)
            else:
                self.backend.dead_letter(self, "rejected by the consumer (requeue=False)")

    def in_progress(self) -> None:
        """Tell the backend the consumer is still working (extends its lease, if any)."""
        if self.backend is not None and not self.settled:
            self.backend.touch(self)


@dataclass(frozen=True)
class DeadLetter:
    """An item that exhausted its attempts (or was rejected), kept for inspection and replay."""

    message: Message
    reason: str
    attempts: int
    failed_at: float = field(default_factory=time.time)
    token: Any = None


class WorkQueueBackend(ABC):
    """Where a work queue's items live. One instance serves one named queue.

    Thread-safe: several consumer threads call ``fetch`` / ``ack`` / ``nack`` concurrently.
    ``put`` returns only once the item is stored (for a durable backend: acknowledged by the
    broker), so a returned ``put`` is never lost.
    """

    name: str
    durable: bool = False

    @abstractmethod
    def put(self, message: Message) -> None:
        """Store a new item (ready for delivery now)."""

    def put_many(self, messages: list[Message]) -> None:
        """Store several items; returns once all are stored.

        Backends with a cheaper batch path (one round trip for many items) override it; the
        default stores them one by one.
        """
        for message in messages:
            self.put(message)

    @abstractmethod
    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """Return up to ``max_items`` ready deliveries, waiting up to ``timeout`` for the first."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> bool | None:
        """Remove a delivered item for good.

        Return ``False`` when the delivery was stale (its lease ran out and the item was
        delivered again), so nothing happened; ``None`` or ``True`` otherwise. The same holds
        for :meth:`nack` and :meth:`dead_letter`: the queue counts only settles that took effect.
        """

    @abstractmethod
    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        """Make a delivered item available again after ``delay`` seconds (attempt + 1)."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        """Move a delivered item to the dead-letter queue and remove it from the work queue."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return up to ``limit`` dead letters, oldest first."""

    @abstractmethod
    def replay(self, tokens: list[Any] | None = None) -> int:
        """Put dead letters (all, or those with the given tokens) back as new items; count them."""

    def touch(self, delivery: Delivery) -> None:
        """Extend the lease of an item still being worked on (no-op where there is no lease)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: at least ``pending``, ``in_flight`` and ``dead_letters``."""

    def close(self) -> None:
        """Release resources (connections, threads). Idempotent."""


# -- the user-facing queue ------------------------------------------------------------------------

Handler = Callable[[Message], Any]


class _PolicyGate(WorkQueueBackend):
    """What a :class:`Delivery` from a :class:`WorkQueue` settles through.

    It applies the queue's :class:`RetryPolicy` on ``nack`` (backoff, or dead-letter once
    attempts are exhausted) and counts every outcome, so that pull (``get``) and push
    (``consume``) behave the same on every backend.
    """

    def __init__(self, inner: WorkQueueBackend, retry: RetryPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.durable = inner.durable
        self.retry = retry
        self._lock = threading.Lock()
        self.counts = {"acked": 0, "retried": 0, "dead_lettered": 0, "handler_errors": 0}

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def put(self, message: Message) -> None:
        self.inner.put(message)

    def put_many(self, messages: list[Message]) -> None:
        self.inner.put_many(messages)

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        deliveries = self.inner.fetch(max_items, timeout)
        for delivery in deliveries:
            delivery.backend = self
        return deliveries

    def ack(self, delivery: Delivery) -> bool | None:
        done = self.inner.ack(delivery)
        if done is not False:  # a stale settle is counted by the backend, not here
            self.count("acked")
        return done

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        attempt = delivery.attempt
        if self.retry.exhausted(attempt):
            return self.dead_letter(
                delivery, f"failed {attempt} of {self.retry.max_attempts} attempts"
            )
        done = self.inner.nack(delivery, delay=delay if delay > 0 else self.retry.backoff(attempt))
        if done is not False:
            self.count("retried")
        return done

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        delivery.message.headers[DEAD_LETTER_REASON_HEADER] = reason
        done = self.inner.dead_letter(delivery, reason)
        if done is not False:
            self.count("dead_lettered")
        return done

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(limit)

    def replay(self, tokens: list[Any] | None = None) -> int:
        return self.inner.replay(tokens)

    def touch(self, delivery: Delivery) -> None:
        self.inner.touch(delivery)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        return {**self.inner.stats(), **counts}

    def close(self) -> None:
        self.inner.close()


class WorkQueue:
    """Competing consumers with explicit ack / nack, retries with backoff and a dead-letter queue.

    Each item goes to one consumer. A consumer acks it when done; a nack (or a handler that
    raises) redelivers it after the policy's backoff, and after ``retry.max_attempts`` failed
    attempts it goes to the dead-letter queue, where :meth:`dead_letters` shows it and
    :meth:`replay` puts it back. Backoff is scheduled, never slept on, so a failing item never
    holds up the others.

    Where the items live: ``backend=`` if given; else the transport's durable backend when it
    declares :attr:`~eventforge.transport.Capability.DURABLE` (Redis Streams, JetStream); else,
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
        inner = backend or _choose_backend(
            name, transport, self.retry, visibility_timeout, max_size
        )
        self._gate = _PolicyGate(inner, self.retry)
        self._consumers: list[Consumer] = []
        self._closed = False

    @property
    def backend(self) -> WorkQueueBackend:
        """The backend that stores the items."""
        return self._gate.inner

    # -- producing --------------------------------------------------------------------------

    def put(self, payload: Any, **headers: Any) -> str:
        """Store a new item; return its message id once it is stored (durably, if durable).

        Header values must be str, int, float or bool (as for ``MessageQueue.publish``), so the
        same code works on every backend.
        """
        _check_headers(headers)
        message = Message(self.name, payload, headers)
        self._gate.put(message)
        return message.id

    def put_many(self, payloads: Iterable[Any], **headers: Any) -> list[str]:
        """Store several items (each with the same headers); return their ids once all are stored.

        On a durable backend this is one round trip per batch instead of one per item, the way
        to feed a queue fast. If the link fails midway, some items may be stored: the error says
        so, and the ids of a retried batch are new.
        """
        _check_headers(headers)
        messages = [Message(self.name, payload, dict(headers)) for payload in payloads]
        if messages:
            self._gate.put_many(messages)
        return [message.id for message in messages]

    async def put_async(self, payload: Any, **headers: Any) -> str:
        """The awaitable twin of :meth:`put` (a durable backend's round trip runs off-loop)."""
        if not self._gate.durable:
            return self.put(payload, **headers)
        return await asyncio.to_thread(self.put, payload, **headers)

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
                from ._loop import run_sync

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
            except Exception:
                log.warning("work queue %r: fetch failed", self.queue.name, exc_info=True)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
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
    from .transport import Capability, require_capability
    from .transports.memory import MemoryTransport

    if transport is not None and transport.has(Capability.DURABLE):
        return transport.work_queue_backend(name, retry)
    if transport is None or isinstance(transport, MemoryTransport):
        from ._memory_workqueue import MemoryWorkQueueBackend

        return MemoryWorkQueueBackend(
            name, visibility_timeout=visibility_timeout, max_size=max_size
        )
    require_capability(transport, Capability.DURABLE, feature=f"WorkQueue {name!r}")
    raise AssertionError("unreachable")  # pragma: no cover
