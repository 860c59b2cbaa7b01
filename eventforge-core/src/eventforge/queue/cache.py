"""SubscriptionCache: a bounded, thread-safe buffer of what a subscription received.

For synchronous consumers such as test automation: subscribe once, then ask for what arrived
(``get`` / ``pop`` / ``peek``), wait for a particular message (``wait_for_one``) or for a set of
them in one of three modes (``wait_for_many``). Create one with ``queue.cache(topic)``.

Items are :class:`~eventforge.message.Message` objects, or validated events when the cache was
made for an ``@event`` class (``queue.cache(OrderCreated)``).
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from eventforge.message import Message
from eventforge.queue._port import QueuePort

if TYPE_CHECKING:
    from typing_extensions import Self


__all__ = ["SubscriptionCache", "WaitMode"]


class WaitMode(enum.Enum):
    """How :meth:`SubscriptionCache.wait_for_many` matches its targets."""

    ALL_IN_GIVEN_ORDER = "all_in_given_order"
    """Every target, each matched by an item that arrived after the previous target's."""
    ALL_IN_RANDOM_ORDER = "all_in_random_order"
    """Every target, each matched by a different item, in any order."""
    ANY_OF_GIVEN_MSGS = "any_of_given_msgs"
    """The first item that matches any target."""


Target = Any


def _matches(target: Target, item: Any) -> bool:
    """A callable target is a predicate; a Message matches by id; other values by payload."""
    if callable(target) and not isinstance(target, type):
        return bool(target(item))
    if isinstance(target, Message):
        return isinstance(item, Message) and item.id == target.id
    if isinstance(item, Message):
        return bool(item.payload == target)
    return bool(item == target)


class SubscriptionCache:
    """Buffers the messages of one subscription; at most ``max_size``, the oldest go first.

    Overflow drops the oldest item and counts it in ``stats["overflow"]``. :meth:`close`
    unsubscribes (also on leaving a ``with`` block) and wakes every waiting call.
    """

    def __init__(
        self,
        queue: QueuePort,
        topic: str | type,
        *,
        max_size: int = 1000,
        match: dict[str, Any] | None = None,
        match_mode: str = "all",
    ) -> None:
        if not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a positive int, got {max_size!r}")
        self.max_size = max_size
        self.queue = queue
        self._items: deque[tuple[int, Any]] = deque()
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._received = 0
        self._overflow = 0
        self._closed = False
        self.handler_id = queue.subscribe(topic, self._add, match=match, match_mode=match_mode)

    # -- filling -------------------------------------------------------------------------------

    def _add(self, item: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._received += 1
            self._items.append((next(self._seq), item))
            if len(self._items) > self.max_size:
                self._items.popleft()
                self._overflow += 1
            self._cond.notify_all()

    # -- taking --------------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], Any], timeout: float | None) -> Any:
        """Wait (holding the lock) until ``ready()`` returns something truthy or time is up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = ready()
            if found or self._closed:
                return found
            if deadline is None:
                self._cond.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def get(self, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting up to ``timeout``; ``None`` if none came."""
        with self._cond:
            if self._wait(lambda: bool(self._items), timeout):
                return self._items.popleft()[1]
            return None

    def pop(self, timeout: float | None = None) -> Any:
        """Remove and return the newest item (the latest value), waiting up to ``timeout``."""
        with self._cond:
            if self._wait(lambda: bool(self._items), timeout):
                return self._items.pop()[1]
            return None

    def peek(self, timeout: float | None = None) -> Any:
        """Return the oldest item without removing it, waiting up to ``timeout``."""
        with self._cond:
            if self._wait(lambda: bool(self._items), timeout):
                return self._items[0][1]
            return None

    def drain(self, max_items: int | None = None) -> list[Any]:
        """Remove and return up to ``max_items`` buffered items (all by default), oldest first."""
        with self._cond:
            count = len(self._items) if max_items is None else min(max_items, len(self._items))
            return [self._items.popleft()[1] for _ in range(count)]

    def wait_for_one(self, target: Target, timeout: float | None = None) -> Any:
        """Wait for an item matching ``target``; remove and return it (``None`` on timeout).

        ``target`` is a predicate ``fn(item) -> bool``, a :class:`Message` (matched by id) or a
        value compared with each message's payload (or with each event).
        """

        def find() -> tuple[int, Any] | None:
            for entry in self._items:
                if _matches(target, entry[1]):
                    return entry
            return None

        with self._cond:
            entry = self._wait(find, timeout)
            if entry is None:
                return None
            self._items.remove(entry)
            return entry[1]

    def wait_for_many(
        self,
        targets: Sequence[Target],
        mode: WaitMode = WaitMode.ALL_IN_GIVEN_ORDER,
        timeout: float | None = None,
    ) -> dict[int, Any]:
        """Wait until ``targets`` are matched as ``mode`` says; return ``{target index: item}``.

        The matched items are removed from the cache. On timeout the result holds what matched
        so far, so ``len(result) == len(targets)`` tells whether every target was met (with
        ``ANY_OF_GIVEN_MSGS`` the result has one entry, or none after a timeout).
        """
        if not isinstance(mode, WaitMode):
            raise TypeError(f"mode must be a WaitMode, got {mode!r}")
        targets = list(targets)
        if not targets:
            raise ValueError("wait_for_many needs at least one target")
        matcher = {
            WaitMode.ALL_IN_GIVEN_ORDER: self._in_order,
            WaitMode.ALL_IN_RANDOM_ORDER: self._any_order,
            WaitMode.ANY_OF_GIVEN_MSGS: self._first_of,
        }[mode]
        result: dict[int, tuple[int, Any]] = {}

        def complete() -> bool:
            result.clear()
            result.update(matcher(targets))
            need = 1 if mode is WaitMode.ANY_OF_GIVEN_MSGS else len(targets)
            return len(result) >= need

        with self._cond:
            self._wait(complete, timeout)
            taken = {entry[0] for entry in result.values()}
            if taken:
                self._items = deque(e for e in self._items if e[0] not in taken)
        return {index: entry[1] for index, entry in sorted(result.items())}

    def _in_order(self, targets: list[Target]) -> dict[int, tuple[int, Any]]:
        found: dict[int, tuple[int, Any]] = {}
        index = 0
        for entry in self._items:
            if index == len(targets):
                break
            if _matches(targets[index], entry[1]):
                found[index] = entry
                index += 1
        return found

    def _any_order(self, targets: list[Target]) -> dict[int, tuple[int, Any]]:
        found: dict[int, tuple[int, Any]] = {}
        used: set[int] = set()
        for index, target in enumerate(targets):
            for entry in self._items:
                if entry[0] not in used and _matches(target, entry[1]):
                    found[index] = entry
                    used.add(entry[0])
                    break
        return found

    def _first_of(self, targets: list[Target]) -> dict[int, tuple[int, Any]]:
        for entry in self._items:
            for index, target in enumerate(targets):
                if _matches(target, entry[1]):
                    return {index: entry}
        return {}

    # -- state ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def stats(self) -> dict[str, int]:
        """``size`` (buffered now), ``received`` (in total) and ``overflow`` (dropped oldest)."""
        with self._cond:
            return {
                "size": len(self._items),
                "received": self._received,
                "overflow": self._overflow,
            }

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Unsubscribe and wake every waiting call (they return what they have). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if not self.queue.closed:
            self.queue.unsubscribe(self.handler_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SubscriptionCache({len(self._items)} items, max_size={self.max_size})"
