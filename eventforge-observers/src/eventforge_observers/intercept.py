"""Interceptors: see every message a MessageQueue sends and receives, on any transport.

An :class:`InterceptedTransport` wraps a transport and runs each interceptor around ``send``,
around every delivery to a subscription, and around native ``request``. Because it is a
transport itself, everything built above it (MessageQueue, groups, request/reply, RPC,
RemoteQueue) is covered without changing those classes::

    queue = MessageQueue(transport=intercept(MemoryTransport(), tracing, metrics))

Tracing (:mod:`eventforge_observers.otel`) and metrics (:mod:`eventforge_observers.prometheus`)
are interceptors. Delivery is observed where the transport calls the subscription: for plain
handlers that includes the handler's run; handlers subscribed with ``threaded=True`` or as
coroutines run after the delivery returns.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eventforge.message import Message
from eventforge.transport import (
    Capability,
    RetryPolicy,
    Transport,
    WorkQueueBackend,
    is_native,
    is_nonblocking,
    nonblocking,
)
from eventforge.transports.memory import MemoryTransport

__all__ = ["BoundedMap", "InterceptedTransport", "Interceptor", "intercept"]

Callback = Callable[[Message], Any]


class Interceptor(Protocol):
    """What an interceptor implements; each method must call the function it is handed.

    An interceptor whose hooks never wait (counters, timers) may set a class attribute
    ``nonblocking = True``: when every interceptor of a transport does, deliveries to
    callbacks marked :func:`~eventforge.transport.nonblocking` stay marked through the
    interceptors, so the transport may still run them on its I/O thread.
    """

    def on_send(self, message: Message, send: Callable[[Message], None], transport: str) -> None:
        """Called for every outgoing message; must call ``send(message)``."""

    def on_deliver(
        self, message: Message, callback: Callback, pattern: str, transport: str
    ) -> None:
        """Called for every delivery to a subscription of ``pattern``; must call ``callback``."""

    def on_request(
        self,
        message: Message,
        request: Callable[[Message, float], Message | None],
        timeout: float,
        transport: str,
    ) -> Message | None:
        """Called for a native request (transports with request/reply); must call ``request``."""


class InterceptedTransport(Transport):
    """A transport that runs interceptors around another transport's traffic.

    It declares the wrapped transport's name and capabilities, and passes everything else
    (receive, work queues, stats, close) straight through.
    """

    def __init__(self, inner: Transport, interceptors: Sequence[Interceptor]) -> None:
        if not isinstance(inner, Transport):
            raise TypeError(
                f"intercept() needs an eventforge Transport, got {type(inner).__name__}"
            )
        if not interceptors:
            raise ValueError("intercept() needs at least one interceptor")
        self.inner = inner
        self.interceptors = tuple(interceptors)
        # The wrapper answers to the inner transport's name and capabilities; it keeps
        # non-blocking hand-offs marked only when no interceptor may wait.
        self._pass_marks = all(getattr(i, "nonblocking", False) is True for i in interceptors)
        capabilities = inner.capabilities
        if not self._pass_marks:
            capabilities = capabilities - {Capability.NONBLOCKING_INLINE}
        self.__dict__["name"] = inner.name
        self.__dict__["capabilities"] = capabilities
        label = inner.name
        send: Callable[[Message], None] = inner.send
        for interceptor in reversed(self.interceptors):
            send = _bind_send(interceptor, send, label)
        self._send = send
        # Counted sends run through the interceptors too (see send_counted).
        if callable(getattr(inner, "send_reporting_nobody", None)):
            self.send_reporting_nobody = self._send_reporting_nobody

    def _intercepted(self, last: Callable[[Message], None]) -> Callable[[Message], None]:
        send = last
        for interceptor in reversed(self.interceptors):
            send = _bind_send(interceptor, send, self.inner.name)
        return send

    def counts_receivers(self) -> bool:
        """Whether the wrapped transport counts receivers."""
        return self.inner.counts_receivers()

    def send_counted(self, message: Message) -> int | None:
        """The inner ``send_counted`` behind the interceptors; ``None`` if one dropped it."""
        counts: list[int | None] = []
        counted = self.inner.send_counted
        self._intercepted(lambda m: counts.append(counted(m)))(message)
        return counts[-1] if counts else None

    def _send_reporting_nobody(self, message: Message, nobody: Callable[[], None]) -> None:
        """The inner ``send_reporting_nobody`` behind the interceptors."""
        report = self.inner.send_reporting_nobody  # type: ignore[attr-defined]
        self._intercepted(lambda m: report(m, nobody))(message)

    def send(self, message: Message) -> None:
        self._send(message)

    async def send_async(self, message: Message) -> None:
        """Run the interceptors, then the inner transport's own ``send_async`` if it has one."""
        if not is_native(self.inner, "send_async"):
            self._send(message)
            return
        native = self.inner.send_async
        pending: list[Message] = []
        send: Callable[[Message], None] = pending.append
        for interceptor in reversed(self.interceptors):
            send = _bind_send(interceptor, send, self.inner.name)
        send(message)
        for item in pending:
            await native(item)

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        return self.inner.receive(topic, timeout)

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        return await self.inner.receive_async(topic, timeout)

    def subscribe(self, topic: str, callback: Callback, **options: Any) -> str:
        wrapped = callback
        for interceptor in reversed(self.interceptors):
            wrapped = _bind_deliver(interceptor, wrapped, topic, self.inner.name)
        if self._pass_marks and is_nonblocking(callback):
            nonblocking(wrapped)
        return self.inner.subscribe(topic, wrapped, **options)

    def unsubscribe(self, subscription_id: str) -> bool:
        return self.inner.unsubscribe(subscription_id)

    def close(self) -> None:
        self.inner.close()

    def request(self, message: Message, timeout: float) -> Message | None:
        request: Callable[[Message, float], Message | None] = self.inner.request
        for interceptor in reversed(self.interceptors):
            request = _bind_request(interceptor, request, self.inner.name)
        return request(message, timeout)

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        return self.inner.work_queue_backend(name, policy)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def __getattr__(self, name: str) -> Any:
        # Transport-specific extras (start(), connect(), address, ...) stay reachable.
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        names = ", ".join(type(i).__name__ for i in self.interceptors)
        return f"InterceptedTransport({self.inner!r}, [{names}])"


class BoundedMap:
    """Thread-safe insertion-ordered map that forgets entries past ``limit`` or ``max_age``.

    Interceptors keep per-request state (a span, a start time) keyed by request id; a request
    whose reply never comes must not keep its entry forever. Expired and overflowing entries
    are handed to ``on_evict`` when the next entry is put (no timer thread).
    """

    def __init__(
        self,
        limit: int,
        on_evict: Callable[[Any], None] | None = None,
        *,
        max_age: float | None = None,
    ) -> None:
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit
        self._max_age = max_age
        self._on_evict = on_evict

    def put(self, key: str, value: Any) -> None:
        now = time.monotonic()
        evicted = []
        with self._lock:
            self._items[key] = (now, value)
            items = self._items
            while len(items) > self._limit:
                evicted.append(items.popitem(last=False)[1][1])
            if self._max_age is not None:
                deadline = now - self._max_age
                while items and next(iter(items.values()))[0] < deadline:
                    evicted.append(items.popitem(last=False)[1][1])
        if self._on_evict is not None:
            for item in evicted:
                self._on_evict(item)

    def pop(self, key: str) -> Any:
        with self._lock:
            entry = self._items.pop(key, None)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        return len(self._items)


def _bind_send(
    interceptor: Interceptor, send: Callable[[Message], None], transport: str
) -> Callable[[Message], None]:
    on_send = interceptor.on_send

    def intercepted_send(message: Message) -> None:
        on_send(message, send, transport)

    return intercepted_send


def _bind_deliver(
    interceptor: Interceptor, callback: Callback, pattern: str, transport: str
) -> Callback:
    on_deliver = interceptor.on_deliver

    def intercepted_deliver(message: Message) -> None:
        on_deliver(message, callback, pattern, transport)

    return intercepted_deliver


def _bind_request(
    interceptor: Interceptor,
    request: Callable[[Message, float], Message | None],
    transport: str,
) -> Callable[[Message, float], Message | None]:
    on_request = interceptor.on_request

    def intercepted_request(message: Message, timeout: float) -> Message | None:
        return on_request(message, request, timeout, transport)

    return intercepted_request


def intercept(
    transport: Transport | None = None, *interceptors: Interceptor
) -> InterceptedTransport:
    """Wrap ``transport`` (default: a new ``MemoryTransport``) so ``interceptors`` see its traffic.

    Pass the result to ``MessageQueue(transport=...)``; several queues may share it.
    """
    if transport is None:
        transport = MemoryTransport()
    return InterceptedTransport(transport, interceptors)
