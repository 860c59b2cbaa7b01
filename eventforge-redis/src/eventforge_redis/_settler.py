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
    """Runs ``call(pipeline, *args)`` for queued settles, one pipeline per batch."""

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

    def _send(self, batch: list[tuple[Any, ...]]) -> list[Any]:
        with self._client.pipeline(transaction=False) as pipe:
            for args in batch:
                self._call(pipe, *args)
            return list(pipe.execute(raise_on_error=False))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                self._busy = True
            try:
                results = self._send(batch)
                lost_script = [
                    i for i, r in enumerate(results) if type(r).__name__ == "NoScriptError"
                ]
                if lost_script:  # the server restarted and forgot the script
                    self._reload()
                    again = self._send([batch[i] for i in lost_script])
                    for i, result in zip(lost_script, again, strict=True):
                        results[i] = result
                done = sum(1 for r in results if r == 1)
                failed = sum(1 for r in results if isinstance(r, Exception))
                if failed:
                    self.errors += failed
                    log.warning(
                        "%d acknowledgement(s) failed; those items will be redelivered", failed
                    )
                self._on_result(done, len(batch) - done - failed)
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
