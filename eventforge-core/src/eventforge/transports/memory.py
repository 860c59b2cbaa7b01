"""MemoryTransport: in-process, thread-safe, zero serialization. The default transport."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, TransportClosedError
from eventforge.message import Message
from eventforge.topics import (
    TopicIndex,
    known_topics,
    topic_matches,
    validate_pattern,
    validate_topic,
)
from eventforge.transport import (
    MEMORY_CAPABILITIES,
    Callback,
    ResultStore,
    SubscriptionStatus,
    Transport,
)
from eventforge.transport.urls import mask_url, query_options, split_url
from eventforge.transports._memory_results import MemoryResultStore
from eventforge.transports._timer import DelayedSends

__all__ = ["MemoryTransport"]

log = logging.getLogger("eventforge.transports.memory")

_OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")


class _Subscription:
    __slots__ = ("callback", "id")

    def __init__(self, sub_id: str, callback: Callback) -> None:
        self.id = sub_id
        self.callback = callback


class _Group:
    """The members of one ``(pattern, group)``; each message goes to the next member."""

    __slots__ = ("members", "name", "turn")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[_Subscription] = []
        self.turn = 0

    def pick(self) -> _Subscription | None:
        members = self.members
        if not members:
            return None
        self.turn = (self.turn + 1) % len(members)
        return members[self.turn]


class _Waiter:
    """A pending ``receive``: takes the first matching message, exclusively.

    Every state change happens under the transport's lock. Once ``closed`` (the receive
    returned, timed out, was cancelled, or the transport closed) it accepts no more offers, so
    a message is either returned by its ``receive`` or left for someone else, never lost.
    """

    __slots__ = ("_done", "_loop", "closed", "future", "message")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.message: Message | None = None
        self.closed = False
        self._loop = loop
        self.future: asyncio.Future[Message | None] | None = loop.create_future() if loop else None
        self._done = threading.Event() if loop is None else None

    def offer(self, message: Message) -> bool:
        if self.closed or self.message is not None:
            return False
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(_resolve, self.future, message)
            except RuntimeError:  # the waiting loop is closed: nobody is left to receive
                return False
        else:
            assert self._done is not None
            self._done.set()
        self.message = message
        return True

    def wake(self) -> None:
        """End the wait with no message (the transport is closing)."""
        self.closed = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop has no waiter left to wake
                self._loop.call_soon_threadsafe(_resolve, self.future, None)
        else:
            assert self._done is not None
            self._done.set()

    def wait(self, timeout: float | None) -> None:
        assert self._done is not None
        self._done.wait(timeout)


def _resolve(future: asyncio.Future[Message | None] | None, message: Message | None) -> None:
    if future is not None and not future.done():
        future.set_result(message)


class MemoryTransport(Transport):
    """In-process pub/sub: callbacks run synchronously in the publisher's thread.

    ``send`` hands the very same :class:`Message` object to each matching subscription (one
    member per group) and to the first waiting :meth:`receive`. A message that no subscription
    and no waiting receiver took is kept in a bounded per-topic buffer for a later ``receive``.
    When a topic's buffer holds ``max_queue_size`` messages, ``overflow`` decides what goes:
    ``"drop_oldest"`` (default) or ``"drop_newest"``; either way ``stats()["dropped"]`` counts
    it and nothing disappears silently.
    """

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[str]] = MEMORY_CAPABILITIES

    def __init__(self, max_queue_size: int = 1000, *, overflow: str = "drop_oldest") -> None:
        if not isinstance(max_queue_size, int) or max_queue_size < 1:
            raise ConfigurationError(
                f"max_queue_size must be a positive int, got {max_queue_size!r}",
                key="max_queue_size",
            )
        if overflow not in _OVERFLOW_POLICIES:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(_OVERFLOW_POLICIES)}, got {overflow!r}",
                key="overflow",
            )
        self.max_queue_size = max_queue_size
        self.overflow = overflow
        self._index: TopicIndex[_Subscription | _Group | _Waiter] = TopicIndex()
        self._routes = self._index.cached
        self._keys: dict[str, tuple[int, _Group | None]] = {}
        self._groups: dict[tuple[str, str], tuple[int, _Group]] = {}
        self._buffers: dict[str, deque[Message]] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._lock = threading.RLock()
        self._claims: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._sent = itertools.count()
        self._dropped = 0
        self._buffered = 0
        self._callback_errors = 0
        self._closed = False
        self._delayed: DelayedSends | None = None
        self._results: MemoryResultStore | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryTransport:
        """Build from ``memory://``, options in the query: ``memory://?max_queue_size=10``.

        Keyword ``options`` override the query. Used by :func:`eventforge.connect`.
        """

        parts = split_url(url, "memory")
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                f"{mask_url(url)!r}: memory:// URLs name no host or path; options go in the query, "
                "e.g. memory://?max_queue_size=100",
                key="transport",
            )
        kwargs = query_options(url, {"max_queue_size": int, "overflow": str}, **options)
        return cls(**kwargs)

    # -- the contract ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        if self._closed:
            raise TransportClosedError("MemoryTransport is closed; create a new one")
        topic = message.topic
        if topic.__class__ is not str or topic not in known_topics:
            validate_topic(topic)
        next(self._sent)
        taken = False
        waiter_served = False
        # A cache hit of the index costs a lookup and no call (this is the publish path).
        targets = self._routes.get(topic)
        if targets is None:
            targets = self._index.match(topic)
        for target in targets:
            cls = target.__class__
            if cls is _Subscription:
                # The callback is called inline (not through a helper): this loop is the
                # in-process publish path, and a call level here costs a tenth of a publish.
                try:
                    target.callback(message)  # type: ignore[union-attr]
                except Exception:
                    self._callback_failed(message)
                taken = True
            elif cls is _Group:
                with self._lock:
                    member = target.pick()  # type: ignore[union-attr]
                if member is not None:
                    try:
                        member.callback(message)
                    except Exception:
                        self._callback_failed(message)
                    taken = True
            elif not waiter_served:
                with self._lock:
                    waiter_served = target.offer(message)  # type: ignore[union-attr]
                taken = taken or waiter_served
        if not taken:
            self._buffer(message)

    def send_counted(self, message: Message) -> int:
        """Like :meth:`send`, returning how many subscriptions and receivers took the message.

        A message nobody took is *not* buffered for a later ``receive``: the caller (a queue
        with an unroutable policy) decides what happens to it. Kept apart from :meth:`send`
        so the plain publish path stays one call.
        """
        if self._closed:
            raise TransportClosedError("MemoryTransport is closed; create a new one")
        topic = message.topic
        validate_topic(topic)
        next(self._sent)
        taken = 0
        waiter_served = False
        for target in self._index.match(topic):
            cls = target.__class__
            if cls is _Subscription:
                try:
                    target.callback(message)  # type: ignore[union-attr]
                except Exception:
                    self._callback_failed(message)
                taken += 1
            elif cls is _Group:
                with self._lock:
                    member = target.pick()  # type: ignore[union-attr]
                if member is not None:
                    try:
                        member.callback(message)
                    except Exception:
                        self._callback_failed(message)
                    taken += 1
            elif not waiter_served:
                with self._lock:
                    waiter_served = target.offer(message)  # type: ignore[union-attr]
                taken += waiter_served
        return taken

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        waiter = self._take_or_wait(topic, None)
        if isinstance(waiter, Message):
            return waiter
        finished = False
        try:
            waiter.wait(timeout)
            finished = True
        finally:
            message = self._forget(waiter)
            if not finished and message is not None:
                self._requeue(message)
        return message

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        waiter = self._take_or_wait(topic, asyncio.get_running_loop())
        if isinstance(waiter, Message):
            return waiter
        assert waiter.future is not None
        finished = False
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            finished = True
        except asyncio.TimeoutError:
            finished = True
        finally:
            # After _forget no offer can land; an offer that landed before is returned, or,
            # when this task was cancelled, handed to the next receiver instead of being lost.
            message = self._forget(waiter)
            if not finished and message is not None:
                self._requeue(message)
        return message

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        self._check_open()
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        sub = _Subscription(f"mem-{next(self._ids)}", callback)
        with self._lock:
            if group is None:
                self._keys[sub.id] = (self._index.add(topic, sub), None)
            else:
                entry = self._groups.get((topic, group))
                if entry is None:
                    grp = _Group(group)
                    entry = self._groups[(topic, group)] = (self._index.add(topic, grp), grp)
                key, grp = entry
                grp.members = [*grp.members, sub]
                self._keys[sub.id] = (key, grp)
        return sub.id

    def unsubscribe(self, subscription_id: str) -> bool:
        with self._lock:
            entry = self._keys.pop(subscription_id, None)
            if entry is None:
                return False
            key, grp = entry
            if grp is None:
                return self._index.remove(key)
            grp.members = [m for m in grp.members if m.id != subscription_id]
            if not grp.members:
                self._index.remove(key)
                for gkey, (k, _) in list(self._groups.items()):
                    if k == key:
                        del self._groups[gkey]
            return True

    def subscription_status(self, subscription_id: str) -> SubscriptionStatus:
        """Present while ``subscription_id`` is subscribed on this transport."""
        if subscription_id in self._keys:  # one dict lookup: atomic, no lock needed
            return SubscriptionStatus(True)
        return SubscriptionStatus(False, f"{subscription_id} was unsubscribed from this transport")

    def send_later(self, message: Message, due: float) -> None:
        """Hold ``message`` until ``due`` (Unix time) on a timer thread, then :meth:`send` it."""
        with self._lock:
            if self._closed:
                raise TransportClosedError("MemoryTransport is closed; create a new one")
            delayed = self._delayed
            if delayed is None:
                delayed = self._delayed = DelayedSends("eventforge-memory-delays", self.send)
        delayed.add(message, due)

    def close(self) -> None:
        delayed = self._delayed
        if delayed is not None:
            delayed.close()
        if self._results is not None:
            self._results.close()
        with self._lock:
            self._closed = True
            for waiter in self._waiters.values():
                waiter.wake()
            self._waiters.clear()
            self._keys.clear()
            self._groups.clear()
            self._buffers.clear()
            self._index = TopicIndex()
            self._routes = self._index.cached

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds within this process (the transport is in-process)."""
        now = time.monotonic()
        with self._lock:
            claims = self._claims
            if len(claims) > 1024:
                for stale in [k for k, until in claims.items() if until <= now]:
                    del claims[stale]
            until = claims.get(key)
            if until is not None and until > now:
                return False
            claims[key] = now + ttl
            return True

    def result_store(self) -> ResultStore:
        """Task results in this process's memory (one store per transport)."""
        with self._lock:
            self._check_open()
            if self._results is None:
                self._results = MemoryResultStore()
            return self._results

    def stats(self) -> dict[str, Any]:
        with self._lock:
            buffered_now = sum(len(b) for b in self._buffers.values())
            return {
                "sent": self._sent_count(),
                "buffered": buffered_now,
                "buffered_total": self._buffered,
                "dropped": self._dropped,
                "callback_errors": self._callback_errors,
                "subscriptions": len(self._keys),
                "delayed_pending": self._delayed.pending if self._delayed else 0,
                "delayed_dropped": self._delayed.dropped if self._delayed else 0,
            }

    # -- internals --------------------------------------------------------------------------

    def _sent_count(self) -> int:
        # ``next()`` on an itertools.count is atomic under concurrent publishers where a plain
        # ``+=`` is not, and costs less than a lock. The count has no peek method; its repr,
        # "count(N)", carries the next value.
        text = repr(self._sent)
        return int(text[text.index("(") + 1 : -1])

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("MemoryTransport is closed; create a new one")

    def _callback_failed(self, message: Message) -> None:
        """Count and log a callback's exception; called from inside its ``except`` block."""
        with self._lock:
            self._callback_errors += 1
        log.exception("subscription callback raised for topic %r", message.topic)

    def _buffer(self, message: Message) -> None:
        with self._lock:
            buf = self._buffers.get(message.topic)
            if buf is None:
                buf = self._buffers[message.topic] = deque()
            if len(buf) >= self.max_queue_size:
                self._dropped += 1
                if self.overflow == "drop_newest":
                    log.warning(
                        "buffer for topic %r is full (%d); dropped the newest message",
                        message.topic,
                        self.max_queue_size,
                    )
                    return
                buf.popleft()
            buf.append(message)
            self._buffered += 1

    def _take_or_wait(
        self, topic: str, loop: asyncio.AbstractEventLoop | None
    ) -> Message | _Waiter:
        self._check_open()
        validate_pattern(topic)
        with self._lock:
            taken = self._pop_buffered(topic)
            if taken is not None:
                return taken
            waiter = _Waiter(loop)
            key = self._index.add(topic, waiter)
            self._keys[f"wait-{id(waiter)}"] = (key, None)
            self._waiters[f"wait-{id(waiter)}"] = waiter
            return waiter

    def _pop_buffered(self, topic: str) -> Message | None:
        if "*" not in topic:
            buf = self._buffers.get(topic)
            if buf:
                message = buf.popleft()
                if not buf:
                    del self._buffers[topic]
                return message
            return None
        oldest: tuple[float, str] | None = None
        for name, buf in self._buffers.items():
            if buf and topic_matches(topic, name):
                stamp = buf[0].timestamp
                if oldest is None or stamp < oldest[0]:
                    oldest = (stamp, name)
        return self._pop_buffered(oldest[1]) if oldest else None

    def _forget(self, waiter: _Waiter) -> Message | None:
        """Unregister ``waiter``; return the message it was given, if any (final from now on)."""
        with self._lock:
            waiter.closed = True
            name = f"wait-{id(waiter)}"
            self._waiters.pop(name, None)
            entry = self._keys.pop(name, None)
            if entry is not None:
                self._index.remove(entry[0])
            return waiter.message

    def _requeue(self, message: Message) -> None:
        """Give a message whose receiver went away to another waiter, else to the buffer front."""
        with self._lock:
            if self._closed:
                return
            for target in self._index.match(message.topic):
                if target.__class__ is _Waiter and target.offer(message):
                    return
            buf = self._buffers.get(message.topic)
            if buf is None:
                buf = self._buffers[message.topic] = deque()
            buf.appendleft(message)
            self._buffered += 1
            if len(buf) > self.max_queue_size:
                self._dropped += 1
                dropped = buf.popleft() if self.overflow == "drop_oldest" else buf.pop()
                log.warning(
                    "buffer for topic %r is full (%d); dropped message %s",
                    message.topic,
                    self.max_queue_size,
                    dropped.id,
                )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._keys)} subscriptions"
        return f"MemoryTransport(max_queue_size={self.max_queue_size}, {state})"
