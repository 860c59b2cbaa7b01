"""The dead-letter stream of one JetStream work queue: storing, listing and replaying letters.

A letter is the item's envelope (or, for a malformed one, its raw bytes) with the reason, the
attempt count and the time in headers. It is stored with ``Nats-Msg-Id`` ``dead-<id>-<attempt>``,
so a store retried after a lost acknowledgement is kept once. The item is TERMinated only
after its letter is stored (:mod:`eventforge_nats.jetstream`), so a crash in between
redelivers it rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from eventforge.errors import ProtocolError, TransportError
from eventforge.message import Message
from eventforge.transport import MALFORMED_HEADER, DeadLetter, for_replay, malformed_item
from eventforge.wire import WireCodec

from ._put import PUBLISH_RETRY
from ._streams import QueueLayout

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

__all__ = ["DeadLetters"]

log = logging.getLogger("eventforge.transports.nats")

REASON_HEADER = "Eventforge-Reason"
ATTEMPTS_HEADER = "Eventforge-Attempts"
FAILED_AT_HEADER = "Eventforge-Failed-At"


class DeadLetters:
    """Store, list and replay the dead letters of one work queue."""

    def __init__(self, js: JetStreamContext, codec: WireCodec, layout: QueueLayout) -> None:
        self._js = js
        self._codec = codec
        self._layout = layout

    async def store(
        self, message: Message, data: bytes, reason: str, attempt: int, timeout: float
    ) -> None:
        """Store a letter, retrying along :data:`PUBLISH_RETRY` for up to ``timeout`` seconds."""
        headers = {
            "Nats-Msg-Id": f"dead-{message.id}-{attempt}",
            REASON_HEADER: reason.replace("\r", " ").replace("\n", " "),
            ATTEMPTS_HEADER: str(attempt),
            FAILED_AT_HEADER: repr(time.time()),
        }
        deadline = time.monotonic() + timeout
        for delay in PUBLISH_RETRY.delays():
            try:
                await self._js.publish(self._layout.dlq_subject, data, timeout=2.0, headers=headers)
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"could not store a dead letter of work queue {self._layout.name!r}: "
                        f"{exc!r}; the item stays in the queue and will be redelivered"
                    ) from None
                await asyncio.sleep(delay)

    async def letters(self, limit: int) -> list[DeadLetter]:
        """The first ``limit`` letters, oldest first."""
        import nats.js.errors

        stream = self._layout.dlq_stream
        info = await self._js.stream_info(stream)
        letters: list[DeadLetter] = []
        seq = info.state.first_seq
        while seq <= info.state.last_seq and len(letters) < limit and info.state.messages:
            try:
                raw = await self._js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                seq += 1
                continue
            letters.append(self._letter(seq, raw.data or b"", raw.headers or {}))
            seq += 1
        return letters

    async def replay(self, tokens: list[Any] | None) -> int:
        """Put the letters ``tokens`` (all when ``None``) back as fresh items; return how many."""
        import nats.js.errors

        layout = self._layout
        if tokens is None:
            tokens = [letter.token for letter in await self.letters(1_000_000)]
        count = 0
        for seq in tokens:
            try:
                raw = await self._js.get_msg(layout.dlq_stream, int(seq))
            except nats.js.errors.NotFoundError:
                continue
            letter = self._letter(int(seq), raw.data or b"", raw.headers or {})
            if letter.message.headers.get(MALFORMED_HEADER):
                log.warning(
                    "work queue %r: dead letter %s is malformed; not replayed", layout.name, seq
                )
                continue
            for_replay(letter.message)
            await self._js.publish(
                layout.subject,
                self._codec.encode(letter.message),
                timeout=5.0,
                headers={"Nats-Msg-Id": f"replay-{layout.dlq_stream}-{seq}"},
            )
            await self._js.delete_msg(layout.dlq_stream, int(seq))
            count += 1
        return count

    def _letter(self, seq: int, data: bytes, headers: dict[str, str]) -> DeadLetter:
        try:
            message = self._codec.decode(data)
        except ProtocolError as exc:
            message, _ = malformed_item(self._layout.name, data, exc)
        return DeadLetter(
            message=message,
            reason=headers.get(REASON_HEADER, ""),
            attempts=int(headers.get(ATTEMPTS_HEADER, "0") or 0),
            failed_at=float(headers.get(FAILED_AT_HEADER, "0") or 0),
            token=seq,
        )
