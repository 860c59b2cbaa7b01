"""Acknowledgements off the hot path, many per round trip.

``ack`` only queues. A consumer that fetches again soon takes the queued acks along in the
same pipeline as its next read (:meth:`Settler.take`), so a busy consumer pays no extra round
trip for them. Acks nobody took within ``linger`` seconds are sent by the settler thread, in
one script call per batch. An ack that never reaches Redis (the link broke, the process died)
leaves the entry pending, so it is delivered again after ``claim_idle``: a lost ack costs a
duplicate, never a loss, which is the at-least-once contract anyway.
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
    """Sends queued acks with ``call(client, batch) -> done`` unless a fetch took them first."""

    def __init__(
        self,
        client: Any,
        call: Callable[[Any, list[tuple[Any, ...]]], int],
        on_result: Callable[[int, int], None],
        name: str,
        reload: Callable[[], None],
        linger: float = 0.02,
    ) -> None:
        self._client = client
        self._reload = reload
        self._call = call
        self._on_result = on_result
        self._linger = linger
        self._queue: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = False
        self._closing = False
        self.errors = 0
        self._thread = threading.Thread(
            target=self._run, name=f"eventforge-redis-acks-{name}", daemon=True
        )
        self._thread.start()

    def submit(self, args: tuple[Any, ...]) -> None:
        """Queue one ack."""
        with self._cond:
            self._queue.append(args)
            if len(self._queue) == 1 or len(self._queue) >= _BATCH:
                self._cond.notify_all()

    def take(self, limit: int = _BATCH) -> list[tuple[Any, ...]]:
        """Hand queued acks to a caller that sends them itself (with its next read)."""
        with self._cond:
            count = min(limit, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def failed(self, batch: list[tuple[Any, ...]], exc: BaseException) -> None:
        """A caller could not send what it took: count it (the entries will be redelivered)."""
        self.errors += len(batch)
        log.warning(
            "%d acknowledgement(s) could not be sent (%s); those items will be redelivered "
            "after claim_idle",
            len(batch),
            exc,
        )

    def __len__(self) -> int:
        return len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; ``False`` if ``timeout`` passed first."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            done = self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            self._urgent = False
            return done

    def close(self, timeout: float) -> None:
        """Send what is queued, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue and self._closing:
                    return
                if not self._urgent and not self._closing and len(self._queue) < _BATCH:
                    # Give the consumer's next fetch the chance to carry them for free.
                    self._cond.wait_for(
                        lambda: self._urgent or self._closing or len(self._queue) >= _BATCH,
                        self._linger,
                    )
                count = min(_BATCH, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                self._busy = bool(batch)
            if not batch:
                continue
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
                self.failed(batch, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
