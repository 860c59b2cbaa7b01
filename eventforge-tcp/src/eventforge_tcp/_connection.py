"""A client's one connection to its server: queue frames on it, hold them while down, reconnect.

:class:`Connection` owns the client's current :class:`~eventforge_tcp._link.Link`. Publishers
queue frames on it (waiting for room when the server reads slowly); while it is down they are
held in the :class:`~eventforge_tcp._outbox.Outbox` or refused, as ``offline`` says. The I/O
thread tells it when the link drops and asks it on every housekeeping pass whether a reconnect
is due (:class:`~eventforge_tcp._reconnect.ReconnectSchedule`); a reconnect re-announces every
subscription and sends the held frames before any new one. A refused token is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eventforge.errors import TransportError
from eventforge.transport import Backoff
from eventforge.wire import WireCodec

from ._hello import ClientHello, open_link
from ._io import IOThread
from ._link import Link, LinkState
from ._outbox import Outbox
from ._reconnect import ReconnectSchedule
from ._requests import drop_abandoned_requests
from ._stats import Counts
from .errors import AuthenticationError

__all__ = ["CONNECTION_COUNTERS", "Connection"]

log = logging.getLogger("eventforge.transports.tcp")

CONNECTION_COUNTERS = ("reconnects", "connect_failures", "held_requests_dropped")

_OPEN = LinkState.OPEN


class Connection:
    """The link of one client to its server, kept alive.

    ``announce()`` returns the frames that set a new link up (the subscriptions); ``codec``
    is the client's (the hello may lower its size limit; held requests are read with it);
    ``is_closed()`` tells whether the client closed and ``check_open()`` raises if it did.
    """

    def __init__(
        self,
        hello: ClientHello,
        *,
        io: IOThread,
        counts: Counts,
        codec: WireCodec,
        announce: Callable[[], list[bytes]],
        is_closed: Callable[[], bool],
        check_open: Callable[[], None],
        reconnect: bool,
        backoff: Backoff,
        offline: str,
        max_send_buffer: int,
        send_timeout: float,
    ) -> None:
        self.hello = hello
        self.url = hello.url
        self._io = io
        self._counts = counts
        self._codec = codec
        self._announce = announce
        self._is_closed = is_closed
        self._check_open = check_open
        self.reconnect = reconnect
        self.offline = offline
        self.max_send_buffer = max_send_buffer
        self.send_timeout = send_timeout
        self.link: Link | None = None
        self.fatal: TransportError | None = None
        self.outbox = Outbox(self.url, max_send_buffer, send_timeout)
        self._schedule = ReconnectSchedule(backoff)

    @property
    def up(self) -> bool:
        """Whether the link is open right now."""
        link = self.link
        return link is not None and link.state == _OPEN

    def _down(self) -> bool:
        return not self.up

    def open(self) -> list[bytes]:
        """Open the first link (blocking; errors raise) and register it with the I/O thread.

        The subscriptions are announced first. Returns frames that followed the welcome.
        """
        link, leftover = open_link(self.hello, self._codec)
        with link.lock:
            for frame in self._announce():
                link.append(frame)
        self.link = link
        self._io.register(link)
        return leftover

    # -- publishing ------------------------------------------------------------------------------

    def push(self, frame: bytes, *, hold: bool = True) -> None:
        """Queue ``frame`` on the link; while disconnected hold it (``hold``) or raise."""
        deadline = time.monotonic() + self.send_timeout
        size = len(frame)
        while True:
            if self.fatal is not None:
                raise self.fatal
            self._check_open()
            link = self.link
            if link is not None and link.state == _OPEN:
                queued = wake = False
                with link.lock:
                    if link.state == _OPEN:
                        if link.out_size + size <= self.max_send_buffer:
                            queued = True
                            wake = link.offer(frame)
                        else:
                            # The server is not reading fast enough: wait for room, except
                            # on the I/O thread, the one that makes room: there the message is
                            # dropped and counted, as the server does toward a slow client.
                            if self._io.on_thread():
                                self._io.slow_peer_drop(link)
                                return
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                raise self._full_error()
                            link.cond.wait(min(remaining, 0.1))
                if queued:
                    if wake:
                        self._io.mark_dirty(link)
                    return
                continue
            if not hold:
                raise TransportError(
                    f"not connected to {self.url} (reconnecting); a counted publish is not "
                    "held while offline, so the message was not sent. Retry once connected"
                )
            if self.offline == "raise" or not self.reconnect:
                raise TransportError(
                    f"not connected to {self.url} (reconnecting); the message was not sent. "
                    "Use offline='buffer' to hold messages while the link is down"
                )
            if self.outbox.hold(frame, self._down, deadline):
                return

    def _full_error(self) -> TransportError:
        return TransportError(
            f"send buffer to {self.url} stayed full ({self.max_send_buffer} bytes) for "
            f"{self.send_timeout:.1f}s: the server is not reading; the message was not sent"
        )

    def send_control(self, frame: bytes) -> bool:
        """Queue a control frame if the link is up; return whether it was queued."""
        link = self.link
        if link is None or link.state != _OPEN:
            return False
        with link.lock:
            if link.state == LinkState.CLOSED:
                return False
            link.append(frame)
        self._io.mark_dirty(link)
        return True

    # -- the I/O thread --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Reconnect when the link is down and an attempt is due."""
        if self.link is not None or self._is_closed() or not self.reconnect or self.fatal:
            return
        if self._schedule.due(now):
            self._reconnect()

    def _reconnect(self) -> None:
        try:
            link, _ = open_link(self.hello, self._codec)
        except AuthenticationError as exc:
            self.fatal = exc
            log.error("%s; giving up on reconnecting", exc)
            with self.outbox.cond:
                self.outbox.cond.notify_all()
            return
        except TransportError as exc:
            self._counts.bump("connect_failures")
            attempts = self._schedule.failed(time.monotonic())
            log.log(
                logging.WARNING if attempts == 1 else logging.DEBUG,
                "reconnect to %s failed (attempt %d): %s",
                self.url,
                attempts,
                exc,
            )
            return
        if self._is_closed():
            link.close_socket()
            return
        frames = self._announce()
        # Held frames go onto the new link before it is published to senders, under the lock
        # that offline senders hold, so none is left behind and the order is kept.
        with self.outbox.cond:
            held, abandoned = drop_abandoned_requests(self.outbox.take(), self._codec.decode)
            with link.lock:
                for frame in frames:
                    link.append(frame)
                for frame in held:
                    link.append(frame)
            self.link = link
            self.outbox.cond.notify_all()
        down = self._schedule.restored(time.monotonic())
        self._counts.bump("reconnects")
        self._counts.bump("held_requests_dropped", abandoned)
        self._io.register(link)
        self._io.flush(link)
        log.warning(
            "reconnected to %s after %.2fs; restored %d subscriptions, sent %d held messages, "
            "dropped %d held requests whose callers stopped waiting",
            self.url,
            down,
            len(frames),
            len(held),
            abandoned,
        )

    def lost(self, link: Link, reason: str) -> bool:
        """``link`` closed (I/O thread): hold what never left it; return whether it was ours."""
        if link is not self.link:
            return False
        unsent, cut = link.take_unsent()
        self._counts.bump("frames_lost_on_disconnect", cut)
        with self.outbox.cond:
            self.link = None
            self.outbox.put_back(unsent)
            self.outbox.cond.notify_all()
        if self._is_closed():
            return True
        self._schedule.lost(time.monotonic())
        if self.reconnect:
            log.warning("lost connection to %s (%s); reconnecting", self.url, reason)
        else:
            log.warning("lost connection to %s (%s); reconnect=False", self.url, reason)
        return True
