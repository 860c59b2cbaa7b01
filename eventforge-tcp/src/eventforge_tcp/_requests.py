"""Frames of a TCP client that wait for the server's answer, and requests not to send late.

:class:`Answers` keeps the frames whose caller waits for the server's answer: a subscription
for its ``$tcp.ack``, a counted publish for its ``$tcp.counted``.

:class:`NobodyReports` keeps the requests sent with a ``$tcp.count`` that asks the server to
answer only when nobody received the message, and calls their callback when it does.

:func:`drop_abandoned_requests`: while the link is down a client holds published frames and sends them after the reconnect.
A request among them is dropped instead when its caller has stopped waiting:

* its deadline (the ``ef-deadline`` header, see :mod:`eventforge.deadlines`) has passed, by
  this machine's clock, the same clock its caller used: no skew between machines is involved;
* it was sent with :meth:`~eventforge_tcp.client.TCPClientTransport.send_counted`, which
  waits for the count: when the link dropped before the count arrived, that call has
  already raised ``TransportError`` in its caller. (Requests made by a queue use
  ``send_reporting_nobody`` instead: their callers keep waiting until their deadline, so
  they are sent while it lies ahead.)

Other frames (publishes, subscriptions) are sent as before, in their order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.deadlines import DEADLINE_HEADER, expired
from eventforge.message import Message

from ._control import COUNT, control_frame
from .framing import HEADER

__all__ = ["Answer", "Answers", "NobodyReports", "drop_abandoned_requests", "only_zero_count"]

log = logging.getLogger("eventforge.transports.tcp")

_MARK = DEADLINE_HEADER.encode()
_unpack = HEADER.unpack_from
_size = HEADER.size


def _bodies(entry: bytes) -> list[bytes]:
    """The frame bodies packed in ``entry`` (a frame, or a COUNT frame and its message)."""
    bodies = []
    offset = 0
    while offset + _size <= len(entry):
        (length,) = _unpack(entry, offset)
        offset += _size
        bodies.append(entry[offset : offset + length])
        offset += length
    return bodies


def _abandoned(entry: bytes, decode: Callable[[bytes], Message], now: float) -> bool:
    if _MARK not in entry:  # cheap: only requests carry a deadline
        return False
    caller_gone = False
    request: Message | None = None
    try:
        for body in _bodies(entry):
            message = decode(body)
            if message.topic == COUNT:
                caller_gone = message.payload is None  # a send_counted that raised
            else:
                request = message
    except Exception:  # not ours to judge: send it as it was
        return False
    if request is None or request.reply_to is None:
        return False
    return caller_gone or expired(request, now)


def drop_abandoned_requests(
    held: list[bytes], decode: Callable[[bytes], Message]
) -> tuple[list[bytes], int]:
    """Return the held frames to send and how many requests were dropped."""
    now = time.time()
    kept = [entry for entry in held if not _abandoned(entry, decode, now)]
    return kept, len(held) - len(kept)


# The COUNT frame of a send that wants to hear only of "nobody", around its id (a new_id(),
# plain hex: nothing to escape). Built by concatenation: this is on every request's path.
_HEAD, _TAIL = control_frame(COUNT, {"only_zero": True}, frame_id="@")[_size:].split(b"@")
_pack = HEADER.pack


def only_zero_count(marker: str) -> bytes:
    """The ``$tcp.count`` frame, id ``marker``, that the server answers only for a count of 0."""
    body = _HEAD + marker.encode() + _TAIL
    return _pack(len(body)) + body


class NobodyReports:
    """Callbacks of sent requests, called if the server answers that nobody took them.

    An entry is forgotten when its answer comes, when the link drops (:meth:`clear`: an
    answer can no longer come), or once its deadline passed (its request is over): entries
    are added in time order, so the oldest expired ones are dropped as new ones come.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[float, Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, marker: str, deadline: float, nobody: Callable[[], None]) -> None:
        now = time.time()
        with self._lock:
            waiting = self._waiting
            while waiting:
                first = next(iter(waiting))
                if waiting[first][0] > now:
                    break
                del waiting[first]
            waiting[marker] = (deadline, nobody)

    def forget(self, marker: str) -> None:
        with self._lock:
            self._waiting.pop(marker, None)

    def heard(self, marker: str, payload: Any) -> None:
        """A ``$tcp.counted`` answer arrived (on the I/O thread)."""
        with self._lock:
            entry = self._waiting.pop(marker, None)
        if entry is None or not isinstance(payload, dict) or payload.get("count") != 0:
            return
        try:
            entry[1]()
        except Exception:
            log.exception("a nobody callback of a counted send raised; ignored")

    def clear(self) -> None:
        with self._lock:
            self._waiting.clear()


class Answer:
    """The server's answer to one frame, once it came (``event`` is set)."""

    __slots__ = ("event", "payload")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.payload: Any = None


class Answers:
    """Frames waiting for the server's answer, by the id the answer carries.

    When the link drops every waiter is woken without a payload (:meth:`release`): the
    answer can no longer come.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, Answer] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def expect(self, key: str) -> Answer:
        """Start waiting for the answer to the frame ``key``."""
        answer = self._waiting[key] = Answer()
        return answer

    def forget(self, key: str) -> None:
        """Stop waiting for ``key`` (answered or given up)."""
        self._waiting.pop(key, None)

    def answered(self, key: str, payload: Any) -> bool:
        """An answer arrived (I/O thread); return whether someone was waiting for it."""
        answer = self._waiting.get(key)
        if answer is None:
            return False
        answer.payload = payload
        answer.event.set()
        return True

    def release(self) -> None:
        """Wake every waiter: the link dropped or the client closed."""
        for answer in list(self._waiting.values()):
            answer.event.set()
