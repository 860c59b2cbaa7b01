"""Claims across processes on JetStream: the first ``Nats-Msg-Id`` in the dedupe window wins.

A claim publishes an empty message with ``Nats-Msg-Id: <key>`` to the stream ``EF_CLAIMS``
(file storage, a 24-hour duplicate window and age limit). JetStream stores the first message
with an id and answers every later one within the window as a duplicate, atomically on the
server, so exactly one claimer of a key sees ``duplicate=False``. A claim is therefore held for
at least its ``ttl`` and at most the window (24 hours).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLAIM_STREAM", "CLAIM_SUBJECT", "CLAIM_WINDOW", "JetStreamClaims"]

CLAIM_STREAM = "EF_CLAIMS"
CLAIM_SUBJECT = "eventforge.claims"
CLAIM_WINDOW = 86_400.0
"""Seconds a claim is remembered: the stream's duplicate window (and its message age limit)."""


class JetStreamClaims:
    """Claim keys through one JetStream stream; the stream is made on first use."""

    def __init__(self) -> None:
        self._ready = False

    async def _ensure(self, js: Any) -> None:
        import nats.js.errors
        from nats.js.api import StorageType, StreamConfig

        try:
            await js.stream_info(CLAIM_STREAM)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=CLAIM_STREAM,
                    subjects=[CLAIM_SUBJECT],
                    storage=StorageType.FILE,
                    duplicate_window=CLAIM_WINDOW,
                    max_age=CLAIM_WINDOW,
                )
            )
        self._ready = True

    async def claim(self, nc: Any, key: str, ttl: float) -> bool:
        """Return True when this is the first claim of ``key`` within the window."""
        if not 0 < ttl <= CLAIM_WINDOW:
            raise ValueError(
                f"a claim's ttl must be > 0 and at most {CLAIM_WINDOW:.0f} seconds on NATS "
                f"(the {CLAIM_STREAM} stream's duplicate window), got {ttl}"
            )
        js = nc.jetstream()
        if not self._ready:
            await self._ensure(js)
        ack = await js.publish(CLAIM_SUBJECT, b"", headers={"Nats-Msg-Id": key})
        return not bool(getattr(ack, "duplicate", False))
