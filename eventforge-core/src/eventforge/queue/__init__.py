"""MessageQueue: publish, subscribe, request/reply, caches, rendezvous, remote peers (layer 7)."""

from __future__ import annotations

from eventforge.queue._queue import (
    ErrorHook as ErrorHook,
)
from eventforge.queue._queue import (
    HandlerStatus as HandlerStatus,
)
from eventforge.queue._queue import (
    MessageQueue as MessageQueue,
)
from eventforge.queue._routing import check_match as check_match

__all__ = [
    "ErrorHook",
    "HandlerStatus",
    "MessageQueue",
    "check_match",
]
