"""The time limits that keep a TCP link honest, and the verdict they give on one link.

A peer can hold a connection without being useful in four ways, each with its own limit:

* never finishing the hello (``hello_timeout``, server only; set per link at accept);
* not reading while data for it waits (``write_deadline``);
* going silent, a half-open link (``heartbeat_interval`` then ``heartbeat_timeout``);
* dripping a frame so slowly that it never completes (``frame_timeout``): every byte is
  traffic, so the heartbeat clock never runs out, but a frame begun more than
  ``frame_timeout`` seconds ago and still incomplete ends the link.

:meth:`Limits.check` is asked for every link on each housekeeping pass of the I/O thread.
"""

from __future__ import annotations

from typing import Final

from ._link import Link, LinkState

__all__ = ["DEFAULT_FRAME_TIMEOUT", "PING", "Limits", "Verdict", "frame_progress"]

DEFAULT_FRAME_TIMEOUT: Final = 30.0
"""Seconds a frame may take from its first byte to its last: generous, since a 1 MiB frame
needs only about 35 KiB/s to make it."""

PING: Final = "ping"
"""Verdict: the link has been quiet for a heartbeat interval; send it a ping."""

Verdict = tuple[str, str, str]
"""A link to close: the counter to bump, the cause for the log, the reason in words."""


class Limits:
    """Heartbeat, write and frame deadlines of one transport, checked for each link.

    The values come validated from the transport's option table (positive seconds).
    """

    __slots__ = ("frame_timeout", "heartbeat_interval", "heartbeat_timeout", "write_deadline")

    def __init__(
        self,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float | None,
        write_deadline: float,
        frame_timeout: float,
    ) -> None:
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = (
            float(heartbeat_timeout) if heartbeat_timeout is not None else 3 * heartbeat_interval
        )
        self.write_deadline = float(write_deadline)
        self.frame_timeout = float(frame_timeout)

    def check(self, link: Link, now: float, reads_paused: bool) -> Verdict | str | None:
        """What to do with ``link`` now: close it (a :data:`Verdict`), :data:`PING` it, or nothing.

        While reads are paused (the delivery backlog is full) the peer cannot be blamed for
        silence or for an unfinished frame, so only the write deadline applies.
        """
        if link.state != LinkState.OPEN:
            if link.hello_deadline and now > link.hello_deadline:
                return ("hello_timeouts", "timeout", "no hello before the deadline")
            return None
        if link.out_size and now - link.last_write_progress > self.write_deadline:
            return (
                "disconnects_slow_peer",
                "slow",
                f"peer read nothing for {self.write_deadline:.1f}s with {link.out_size} bytes "
                "waiting (slow or stuck consumer)",
            )
        if reads_paused:
            return None
        started = link.frame_started
        if started and now - started > self.frame_timeout:
            return (
                "frame_timeouts",
                "timeout",
                f"a frame begun {now - started:.1f}s ago is still incomplete "
                f"({link.decoder.buffered} bytes so far; frame_timeout is "
                f"{self.frame_timeout:.1f}s): a peer sending too slowly",
            )
        idle = now - link.last_recv
        if idle > self.heartbeat_timeout:
            return (
                "heartbeat_timeouts",
                "timeout",
                f"no data or heartbeat for {idle:.1f}s (half-open link?)",
            )
        if idle > self.heartbeat_interval and not link.ping_outstanding:
            return PING
        return None


def frame_progress(link: Link, now: float, completed: bool) -> None:
    """Note after a read whether a frame is left unfinished and since when (I/O thread).

    The clock of a partial frame starts when its first bytes arrive: it keeps running while
    that frame trickles in and restarts when a read completes frames and begins a new one.
    """
    if not link.decoder.buffered:
        link.frame_started = 0.0
    elif completed or not link.frame_started:
        link.frame_started = now
