"""The MessageQueue methods of typed listeners, middleware, caches and rendezvous.

Kept apart from :mod:`eventforge.queue` so that module stays about publishing, subscribing and
request/reply; :class:`~eventforge.queue.MessageQueue` inherits these methods.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

from eventforge.dispatch.middleware import resolve_middleware
from eventforge.events import listener_info, typed_handler
from eventforge.queue._port import QueuePort
from eventforge.queue.cache import SubscriptionCache
from eventforge.queue.rendezvous import rendezvous_for

__all__ = ["QueueFeatures"]


class QueueFeatures:
    """Mixin of :class:`~eventforge.queue.MessageQueue`; see the methods for what each does."""

    _lock: threading.RLock
    _middleware: list[object]
    _caches: weakref.WeakSet[SubscriptionCache]

    def _queue(self) -> QueuePort:
        return cast("QueuePort", self)

    def listen(self, listener: object) -> str:
        """Register an ``@event_listener`` instance; its ``on(event)`` receives each event.

        Listeners of one name share the work (a group, across processes on transports with
        groups); ``per_process=True`` listeners each receive every event. Returns the handler
        id, for :meth:`unsubscribe`.
        """
        info = listener_info(listener)
        on: Callable[[Any], Any] = listener.on  # type: ignore[attr-defined]
        handler = typed_handler(info.event, on)
        return self._queue().subscribe(info.event, handler, group=info.group)

    def use(self, *middleware: object) -> None:
        """Append middleware (instances, names or ``"module:attr"``).

        The send side changes at once; the receive side applies to handlers subscribed from
        now on (handlers already subscribed keep the chain they were built with).
        """
        added = resolve_middleware(middleware)
        with self._lock:
            self._middleware = [*self._middleware, *added]
            self._queue()._rebuild_send()

    @property
    def middleware(self) -> tuple[object, ...]:
        """The installed middleware, in order."""
        return tuple(self._middleware)

    def cache(
        self,
        topic: str | type,
        *,
        max_size: int = 1000,
        match: dict[str, Any] | None = None,
        match_mode: str = "all",
    ) -> SubscriptionCache:
        """Buffer the messages matching ``topic`` for synchronous consumers.

        Returns a :class:`~eventforge.queue.cache.SubscriptionCache` (``get``, ``pop``, ``peek``,
        ``wait_for_one``, ``wait_for_many``, ``drain``); close it to unsubscribe.
        """

        cache = SubscriptionCache(
            self._queue(), topic, max_size=max_size, match=match, match_mode=match_mode
        )
        with self._lock:
            self._caches.add(cache)  # closing the queue closes it, waking its waiters
        return cache

    def announce_ready(self, roles: Sequence[str], *, space: str = "default") -> None:
        """Tell :meth:`wait_until_ready` callers (any process) this queue is ready in ``roles``."""

        rendezvous_for(self._queue(), space).announce_ready(roles)

    def wait_until_ready(
        self, requirements: dict[str, int], timeout: float = 30.0, *, space: str = "default"
    ) -> bool:
        """Wait until participants announced ``requirements`` (``{"worker": 3}``); ``False`` on timeout."""

        party = rendezvous_for(self._queue(), space)
        return party.wait_until_ready(requirements, timeout)
