"""Accepting connections on the server's listener, and what to do when the process runs dry.

When the process (or the system) is out of file descriptors, ``accept()`` fails with EMFILE /
ENFILE, but the pending connection stays in the listen backlog, so the listener stays readable:
a selector loop that keeps watching it spins at full CPU and logs the same failure thousands
of times a second. :class:`Acceptor` avoids both:

* a **reserve descriptor** (``/dev/null``) is held open; on such a failure it is closed for a
  moment to accept the waiting connections one by one, send each a clear ``busy`` refusal
  (plain TCP; over TLS it is just closed, as a handshake would need a descriptor of its own)
  and close it, so a client learns at once why it was turned away instead of timing out;
* the listener is then **not watched for** :data:`ACCEPT_BACKOFF` seconds;
* one warning is **logged per back-off period**, with the number of connections refused since
  the previous one.

Connections already open keep being served throughout; accepting resumes by itself once
descriptors are free again.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterator

from .framing import encode_json_frame

__all__ = ["ACCEPT_BACKOFF", "Acceptor", "refuse_raw"]

log = logging.getLogger("eventforge.transports.tcp")

ACCEPT_BACKOFF = 1.0
"""Seconds the listener is left alone after ``accept()`` failed for lack of resources."""

_BATCH = 64
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def refuse_raw(sock: socket.socket, code: str, message: str) -> None:
    """Send a refusal frame on a freshly accepted plain socket (best effort) and close it.

    The hello the client may have sent already is read first: closing a socket with unread
    data resets the connection, and the reset can beat the refusal to the client.
    """
    try:
        sock.setblocking(False)
        sock.send(encode_json_frame({"error": code, "message": message}))
        sock.recv(65536)
    except OSError:
        pass
    sock.close()


class Acceptor:
    """The listener of one server: accept in batches, back off and refuse when out of fds."""

    def __init__(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        *,
        tls: bool,
        count: Callable[[str, int], None],
    ) -> None:
        self.listener = listener
        self._selector = selector
        self._tls = tls
        self._count = count
        self._reserve: int | None = None
        self._take_reserve()
        self._paused_until = 0.0
        self._last_warning = -1e9  # when the last line about exhaustion was logged
        self._unreported = 0  # refusals since then
        selector.register(listener, selectors.EVENT_READ, listener)

    @property
    def paused(self) -> bool:
        """Whether the listener is unwatched right now (backing off after exhaustion)."""
        return self._paused_until > 0.0

    def ready(self) -> Iterator[tuple[socket.socket, str]]:
        """Accept what is waiting (up to a batch); yield each new socket and its peer address."""
        for _ in range(_BATCH):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._exhausted(exc)
                    return
                log.debug("accept failed: %s", exc)  # e.g. the peer reset before we got to it
                continue
            yield sock, f"{addr[0]}:{addr[1]}"

    def tick(self, now: float) -> None:
        """Report refusals not yet logged and watch the listener again once the back-off period
        is over (I/O thread)."""
        if self._unreported and now - self._last_warning >= ACCEPT_BACKOFF:
            log.warning(
                "still out of file descriptors: refused %d connection(s) in the last %.1fs",
                self._unreported,
                now - self._last_warning,
            )
            self._unreported = 0
            self._last_warning = now
        if not self._paused_until or now < self._paused_until:
            return
        self._paused_until = 0.0
        if self._reserve is None:
            self._take_reserve()
        try:
            self._selector.register(self.listener, selectors.EVENT_READ, self.listener)
        except (KeyError, ValueError, OSError):
            pass

    def close(self) -> None:
        """Close the listener and the reserve descriptor."""
        self.listener.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _exhausted(self, exc: OSError) -> None:
        reason = os.strerror(exc.errno or 0)
        refused = self._refuse_waiting(reason)
        self._count("accept_failures", 1)
        self._count("connections_refused", refused)
        now = time.monotonic()
        if now - self._last_warning > 2 * ACCEPT_BACKOFF:  # a new episode: explain it once
            self._last_warning = now
            log.warning(
                "accept failed: %s; refused %d connection(s) and pausing accept for %.1fs at a "
                "time until descriptors are free (one line per period while it lasts). Raise "
                "the limit (ulimit -n / RLIMIT_NOFILE) or lower max_connections",
                reason,
                refused,
                ACCEPT_BACKOFF,
            )
        else:
            self._unreported += refused
        try:
            self._selector.unregister(self.listener)
        except (KeyError, ValueError, OSError):
            pass
        self._paused_until = now + ACCEPT_BACKOFF

    def _refuse_waiting(self, reason: str) -> int:
        """Accept and refuse the connections waiting in the backlog with the reserve fd."""
        refused = 0
        message = f"server is out of file descriptors ({reason}); retry later"
        while self._reserve is not None and refused < _BATCH:
            os.close(self._reserve)
            self._reserve = None
            try:
                sock, _ = self.listener.accept()
            except OSError:
                self._take_reserve()
                break
            if self._tls:
                sock.close()
            else:
                refuse_raw(sock, "busy", message)
            refused += 1
            self._take_reserve()
        return refused

    def _take_reserve(self) -> None:
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._reserve = None  # taken again at the next tick once a descriptor is free
