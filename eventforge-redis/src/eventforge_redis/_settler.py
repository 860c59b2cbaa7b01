"""Acknowledgements in the background, many per round trip.

``ack`` only queues; a settler thread runs the settle script for everything queued in one
pipeline. An ack that never reaches Redis (the link broke, the process died) leaves the entry
pending, so it is delivered again after ``claim_idle``: the cost of a lost ack is a duplicate,
never a loss, which is the at-least-once contract anyway.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Settler"]

log = logging.getLogger("eventforge.transports.redis")

_BATCH = 500


class Settler:
    """Runs ``call(client, batch)`` for queued settles: one call (one round trip) per batch."""

    def __init__(
        self,
        client: Any,
        call: Callable[..., Any],
        on_result: Callable[[int, int], None],
        name: str,
        reload: Callable[[], None],
    ) -> None:
        self._client = client
        self._reload = reload
        self._call = call
        self._on_result = on_result
        self._queue: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self.errors = 0
        self._thread = threading.Thread(
            target=self._run, name=f"eventforge-redis-acks-{name}", daemon=True
        )
        self._thread.start()

    def submit(self, args: tuple[Any, ...]) -> None:
        with self._cond:
            self._queue.append(args)
            self._cond.notify()

    def __len__(self) -> int:
        return len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued was sent; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                self._busy = True
            try:
                try:
                    done = int(self._call(self._client, batch))
                except Exception as exc:
                    if type(exc).__name__ != "NoScriptError":
                        raise
                    self._reload()  # the server restarted and forgot the script
                    done = int(self._call(self._client, batch))
                self._on_result(done, len(batch) - done)
            except Exception as exc:
                self.errors += len(batch)
                log.warning(
                    "%d acknowledgement(s) could not be sent (%s); those items will be redelivered "
                    "after claim_idle",
                    len(batch),
                    exc,
                )
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
