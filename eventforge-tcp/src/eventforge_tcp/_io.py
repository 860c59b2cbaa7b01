"""The I/O thread: one ``selectors`` loop that owns every socket of a transport.

It reads large chunks, cuts frames and hands them to the transport (``on_frames``); it writes
whatever publishers queued, many frames per ``send``; it keeps the links honest (heartbeats,
write and frame deadlines, see :mod:`eventforge_tcp._liveness`). When the transport's delivery
backlog grows past ``max_pending`` it stops reading every link (TCP then pushes back on the
peers) until the backlog halves. Publishing threads queue frames on a link and mark it dirty;
the loop flushes dirty links at the end of each pass.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable

from eventforge.errors import ProtocolError
from eventforge.message import Message

from ._control import ERROR, PING, PONG, control_frame
from ._link import Link, LinkState, WriteResult
from ._liveness import Limits, frame_progress
from ._stats import Counts

__all__ = ["IO_COUNTERS", "IOThread"]

log = logging.getLogger("eventforge.transports.tcp")

IO_COUNTERS = (
    "protocol_errors",
    "dropped_slow_peer",
    "disconnects_slow_peer",
    "heartbeat_timeouts",
    "frame_timeouts",
    "hello_timeouts",
    "tls_failures",
)
"""The counters the I/O thread bumps (the transport declares them in its :class:`Counts`)."""

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_TICK = 0.05
_RECV_SIZE = 256 * 1024


def _nothing_waits() -> int:
    return 0


FramesHandler = Callable[[Link, list[bytes], set[Link]], None]
ClosedHandler = Callable[[Link, str, str], None]


class IOThread:
    """The selector loop of one transport and the link operations that must respect it.

    ``on_frames(link, bodies, dirty)`` handles what one read produced; frames it queues in
    reply go through :meth:`io_append` and are flushed at the end of the pass (``dirty``).
    ``on_link_closed(link, cause, reason)`` forgets a link that closed; ``on_tick(now)`` does
    the transport's own housekeeping; ``on_listener(data)`` accepts connections on a
    listening socket registered with :attr:`selector`. All of them run on this thread.
    :attr:`backlog` tells how many deliveries wait for the transport's delivery thread (the
    transport sets it once that thread exists).
    """

    def __init__(
        self,
        *,
        limits: Limits,
        max_send_buffer: int,
        max_pending: int,
        counts: Counts,
        on_frames: FramesHandler,
        on_link_closed: ClosedHandler,
        on_tick: Callable[[float], None],
        on_listener: Callable[[object], None] | None = None,
    ) -> None:
        self.limits = limits
        self.max_send_buffer = max_send_buffer
        self.max_pending = max_pending
        self._counts = counts
        self.backlog: Callable[[], int] = _nothing_waits
        self._on_frames = on_frames
        self._on_link_closed = on_link_closed
        self._on_tick = on_tick
        self._on_listener = on_listener
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, _READ, None)
        self._woken = False
        self._dirty: set[Link] = set()
        self._dirty_lock = threading.Lock()
        self.links: dict[int, Link] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.reads_paused = False

    def start(self, name: str) -> None:
        """Start the loop on a daemon thread called ``name``."""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def on_thread(self) -> bool:
        """Tell whether the caller is the I/O thread."""
        return threading.current_thread() is self._thread

    # -- queuing frames (any thread) -----------------------------------------------------------

    def wake(self) -> None:
        """Make the loop run a pass now (any thread)."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def mark_dirty(self, link: Link) -> None:
        """Ask the loop to flush ``link`` (any thread); one wake-up per pass at most."""
        with self._dirty_lock:
            self._dirty.add(link)
            if self._woken:
                return
            self._woken = True
        self.wake()

    def queue_frame(self, link: Link, frame: bytes, *, control: bool = False) -> bool:
        """Queue ``frame`` on ``link`` from a thread that is not the I/O thread.

        The first frame after a pause is written at once by the caller; frames that follow
        closely are left for the I/O thread to coalesce. When the link's buffer is full the
        caller waits for room (at most until the write deadline disconnects a stuck peer; the
        frame then counts as dropped). Returns whether the frame was queued.
        """
        with link.lock:
            while not control and link.out_size + len(frame) > self.max_send_buffer:
                # Backpressure on the publishing thread; a peer that stops reading is cut off by
                # the write deadline, which ends this wait.
                if link.state == LinkState.CLOSED:
                    break
                if self.on_thread():
                    # A non-blocking callback sending from the I/O thread: waiting here would
                    # stop the very thread that makes room.
                    self.slow_peer_drop(link)
                    return False
                link.cond.wait(0.1)
            if link.state == LinkState.CLOSED:
                self._counts.bump("dropped_slow_peer")
                return False
            wake = link.offer(frame)
        if wake:
            self.mark_dirty(link)
        return True

    def slow_peer_drop(self, link: Link) -> None:
        """Count a message dropped for a peer whose buffer is full (warn once per link)."""
        self._counts.bump("dropped_slow_peer")
        if not link.slow_warned:
            link.slow_warned = True
            log.warning(
                "send buffer to %s is full (%d bytes): dropping messages for it until it reads "
                "again; it is disconnected if it makes no progress for %.1fs",
                link.name,
                self.max_send_buffer,
                self.limits.write_deadline,
            )

    def io_append(
        self, link: Link, frame: bytes, dirty: set[Link], *, control: bool = False
    ) -> bool:
        """Queue ``frame`` from the I/O thread itself; it is flushed at the end of the loop pass.

        Returns whether the frame was queued (not when the link is closed or, for a message,
        its buffer is full).
        """
        with link.lock:
            if link.state == LinkState.CLOSED:
                return False
            if not control and link.out_size + len(frame) > self.max_send_buffer:
                self.slow_peer_drop(link)
                return False
            link.append(frame)
        dirty.add(link)
        return True

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        sel = self.selector
        next_tick = time.monotonic() + _TICK
        dirty: set[Link] = set()
        while not self._stopping:
            try:
                events = sel.select(_TICK)
            except (OSError, ValueError):
                if self._is_stopping():
                    return
                raise
            for key, mask in events:
                data = key.data
                if data is None:
                    self._drain_wake()
                elif isinstance(data, Link):
                    if mask & _READ:
                        self._on_readable(data, dirty)
                    if mask & _WRITE and data.state != LinkState.CLOSED:
                        self._on_writable(data)
                elif self._on_listener is not None:
                    self._on_listener(data)
            with self._dirty_lock:
                if self._dirty:
                    dirty |= self._dirty
                    self._dirty = set()
                self._woken = False
            if dirty:
                for link in dirty:
                    if link.state != LinkState.CLOSED:
                        self.flush(link)
                dirty = set()
            self._check_backlog()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + _TICK
                try:
                    self._tick(now)
                except Exception:
                    log.exception("TCP transport housekeeping failed")

    def _is_stopping(self) -> bool:
        return self._stopping

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _on_readable(self, link: Link, dirty: set[Link]) -> None:
        if link.state == LinkState.TLS_HANDSHAKE:
            self._handshake(link)
            return
        sock = link.sock
        bodies: list[bytes] = []
        try:
            while True:
                try:
                    data = sock.recv(_RECV_SIZE)
                except (
                    BlockingIOError,
                    InterruptedError,
                    ssl.SSLWantReadError,
                    ssl.SSLWantWriteError,
                ):
                    break
                if not data:
                    try:
                        link.decoder.eof()
                    except ProtocolError as exc:
                        self._counts.bump("protocol_errors")
                        self.drop_link(link, "protocol", str(exc))
                        return
                    self.drop_link(link, "eof", "peer closed the connection")
                    return
                bodies.extend(link.decoder.feed(data))
                if not (link.tls and sock.pending()):  # type: ignore[attr-defined]
                    break
        except ProtocolError as exc:
            self.protocol_error(link, exc)
            return
        except OSError as exc:
            self.drop_link(link, "error", f"{type(exc).__name__}: {exc}")
            return
        link.last_recv = now = time.monotonic()
        link.ping_outstanding = False
        frame_progress(link, now, bool(bodies))
        if bodies:
            try:
                self._on_frames(link, bodies, dirty)
            except ProtocolError as exc:
                self.protocol_error(link, exc)

    def _on_writable(self, link: Link) -> None:
        if link.state == LinkState.TLS_HANDSHAKE:
            self._handshake(link)
            return
        self.flush(link)

    def _handshake(self, link: Link) -> None:
        sock = link.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(link, _READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(link, _READ | _WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self._counts.bump("tls_failures")
            self.drop_link(link, "error", f"TLS handshake failed: {exc}")
            return
        link.state = LinkState.HELLO
        self._set_events(link, _READ)
        if sock.pending():
            # The hello may have arrived with the last handshake flight and sit decrypted in
            # the TLS buffer, where the selector cannot see it.
            dirty: set[Link] = set()
            self._on_readable(link, dirty)
            for other in dirty:
                self.flush(other)

    def flush(self, link: Link) -> None:
        """Write what ``link`` has queued and watch it for writability while some is left."""
        try:
            result = link.flush()
        except OSError as exc:
            self.drop_link(link, "error", f"{type(exc).__name__}: {exc}")
            return
        want = _WRITE if result == WriteResult.PENDING else 0
        read = 0 if self.reads_paused else _READ
        self._set_events(link, read | want)

    def _set_events(self, link: Link, events: int) -> None:
        if link.state == LinkState.CLOSED or events == link.events:
            return
        try:
            if link.events == 0:
                if events:
                    self.selector.register(link.sock, events, link)
            elif events == 0:
                self.selector.unregister(link.sock)
            else:
                self.selector.modify(link.sock, events, link)
        except (KeyError, ValueError, OSError):
            return
        link.events = events

    def register(self, link: Link) -> None:
        """Start watching ``link`` (I/O thread, or before the I/O thread starts)."""
        self.links[link.id] = link
        self._set_events(link, _READ)

    def _check_backlog(self) -> None:
        pending = self.backlog()
        if not self.reads_paused and pending > self.max_pending:
            self.reads_paused = True
            for link in list(self.links.values()):
                self._set_events(link, link.events & ~_READ)
        elif self.reads_paused and pending <= self.max_pending // 2:
            self.reads_paused = False
            now = time.monotonic()
            for link in list(self.links.values()):
                link.last_recv = now
                link.frame_started = now if link.frame_started else 0.0
                self._set_events(link, link.events | _READ)

    def backlog_drained(self, pending: int) -> None:
        """Resume reading soon when the backlog fell to half (the delivery thread calls it)."""
        if self.reads_paused and pending <= self.max_pending // 2:
            self.wake()

    # -- closing links ---------------------------------------------------------------------------

    def protocol_error(self, link: Link, exc: ProtocolError) -> None:
        """Refuse bad input: count it, tell the peer why (best effort), close the link."""
        self._counts.bump("protocol_errors")
        reason = str(exc)
        try:
            with link.lock:
                link.frames = [control_frame(ERROR, {"code": "protocol", "message": reason})]
                link.partial = None
                link.write()
        except OSError:
            pass
        self.drop_link(link, "protocol", reason)

    def drop_link(self, link: Link, cause: str, reason: str) -> None:
        """Close ``link`` and tell the transport (I/O thread); a closed link is left alone."""
        if link.state == LinkState.CLOSED:
            return
        if link.events:
            try:
                self.selector.unregister(link.sock)
            except (KeyError, ValueError, OSError):
                pass
            link.events = 0
        self.links.pop(link.id, None)
        level = logging.INFO if cause in ("eof", "closed") else logging.WARNING
        log.log(level, "closed connection %s: %s", link.name, reason)
        link.close_socket()
        self._on_link_closed(link, cause, reason)

    def _tick(self, now: float) -> None:
        check = self.limits.check
        for link in list(self.links.values()):
            if link.state == LinkState.CLOSED:
                continue
            verdict = check(link, now, self.reads_paused)
            if verdict is None:
                continue
            if isinstance(verdict, str):  # the only other verdict: a ping is due
                link.ping_outstanding = True
                with link.lock:
                    link.append(control_frame(PING, None))
                self.flush(link)
                continue
            counter, cause, reason = verdict
            self._counts.bump(counter)
            self.drop_link(link, cause, reason)
        self._on_tick(now)

    def common_control(self, link: Link, message: Message, dirty: set[Link]) -> bool:
        """Handle ping / pong / error; return whether ``message`` was one of them."""
        topic = message.topic
        if topic == PING:
            self.io_append(link, control_frame(PONG, None), dirty, control=True)
            return True
        if topic == PONG:
            return True
        if topic == ERROR:
            payload = message.payload if isinstance(message.payload, dict) else {}
            self.drop_link(
                link, "closed", f"peer reported an error: {str(payload.get('message'))[:200]}"
            )
            return True
        return False

    # -- shutdown --------------------------------------------------------------------------------

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the links to send what is queued (not on the I/O thread)."""
        if self._thread is None or self.on_thread():
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [lk for lk in list(self.links.values()) if lk.out_size]
            if not waiting:
                return
            for link in waiting:
                self.mark_dirty(link)
            time.sleep(0.002)

    def stop(self) -> None:
        """End the loop, write what the sockets take at once, close every socket."""
        self._stopping = True
        self.wake()
        thread = self._thread
        if thread is not None and not self.on_thread():
            thread.join(timeout=5)
        for link in list(self.links.values()):
            with link.lock:
                try:
                    link.write()
                except OSError:
                    pass
            link.close_socket()
        self.links.clear()
        try:
            self.selector.close()
        except (OSError, ValueError):
            pass
        self._wake_r.close()
        self._wake_w.close()
