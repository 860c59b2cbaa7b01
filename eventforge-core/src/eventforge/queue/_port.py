"""What the queue's helpers (caches, rendezvous, listeners) need of a queue.

:class:`~eventforge.queue.MessageQueue` satisfies :class:`QueuePort`; the helpers are written
against this protocol, so they sit below the queue instead of importing it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["QueuePort"]


class QueuePort(Protocol):
    """Publish, subscribe (with a header match), unsubscribe, and whether the queue is closed."""

    def publish(self, topic: str | object, payload: Any = None, **headers: Any) -> str: ...

    def subscribe(
        self,
        topic: str | type,
        handler: Callable[..., Any],
        *,
        group: str | None = None,
        match: dict[str, Any] | None = None,
        match_mode: str = "all",
    ) -> str: ...

    def unsubscribe(self, handler_id: str) -> bool: ...

    @property
    def closed(self) -> bool: ...
