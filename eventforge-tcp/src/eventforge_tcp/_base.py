"""What the TCP server and client share: the I/O thread, the delivery thread, limits and stats.

One I/O thread per transport owns every socket (a ``selectors`` loop): it reads large chunks,
cuts frames, decodes them and routes them; it writes whatever publishers queued, many frames per
``send``. Callbacks never run on it: decoded messages go, a batch per read, to the delivery
thread, so a slow handler cannot stall heartbeats or other connections. When more than
``max_pending`` deliveries wait, the I/O thread stops reading (TCP pushes back on the peers)
until the backlog halves. The exception are callbacks marked
:func:`~eventforge.transport.nonblocking` (reply waiters, hand-offs to handler threads): they
run on the I/O thread at once, which saves a thread hand-off per message and lets a handler
on the delivery thread wait for a reply.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from abc import abstractmethod
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, ProtocolError, TransportClosedError
from eventforge.message import Message
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import Callback, Transport
from eventforge.wire import WireCodec

from ._capabilities import CAPABILITIES
from ._control import ERROR, PING, PONG, control_frame
from ._delivery import Delivery, DeliveryThread, Waiter
from ._link import Link, LinkState, WriteResult
from ._liveness import Limits, frame_progress
from .framing import CONTROL_PREFIX, HEADER

__all__ = ["Delivery", "TCPTransportBase"]

log = logging.getLogger("eventforge.transports.tcp")


_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_pack = HEADER.pack
_TICK = 0.05
_RECV_SIZE = 256 * 1024
_SENDABLE_LIMIT = 4096


class TCPTransportBase(Transport):
    """The machinery shared by :class:`TCPServerTransport` and :class:`TCPClientTransport`."""

    name: ClassVar[str] = "tcp"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(
        self,
        *,
        token: str | None,
        ssl_context: ssl.SSLContext | None,
        max_frame_size: int,
        max_send_buffer: int,
        heartbeat_interval: float,
        heartbeat_timeout: float | None,
        write_deadline: float,
        frame_timeout: float,
        max_pending: int,
        serializer: str | None,
        trusted: bool,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ConfigurationError("token must be a non-empty string or None", key="token")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ConfigurationError(
                f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}",
                key="ssl_context",
            )
        if not isinstance(max_frame_size, int) or max_frame_size < 256:
            raise ConfigurationError(
                f"max_frame_size must be an int of at least 256 bytes, got {max_frame_size!r}",
                key="max_frame_size",
            )
        if not isinstance(max_send_buffer, int) or max_send_buffer < max_frame_size:
            raise ConfigurationError(
                f"max_send_buffer must be an int >= max_frame_size ({max_frame_size}), got "
                f"{max_send_buffer!r}",
                key="max_send_buffer",
            )
        self.limits = Limits(
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            write_deadline=write_deadline,
            frame_timeout=frame_timeout,
        )
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(
                f"max_pending must be a positive int, got {max_pending!r}", key="max_pending"
            )
        self._token = token
        self.ssl_context = ssl_context
        self.max_frame_size = max_frame_size
        self.max_send_buffer = max_send_buffer
        self.heartbeat_interval = self.limits.heartbeat_interval
        self.heartbeat_timeout = self.limits.heartbeat_timeout
        self.write_deadline = self.limits.write_deadline
        self.frame_timeout = self.limits.frame_timeout
        self.max_pending = max_pending
        self.trusted = trusted
        self.codec = WireCodec(serializer, trusted=trusted, max_size=max_frame_size)
        self._closed = False
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _READ, None)
        self._woken = False
        self._dirty: set[Link] = set()
        self._dirty_lock = threading.Lock()
        self._links: dict[int, Link] = {}
        self._io_thread: threading.Thread | None = None
        self._delivery = DeliveryThread("eventforge-tcp-delivery", self._after_delivery)
        self._reads_paused = False
        self._ids = itertools.count(1)
        self._stats_lock = threading.Lock()
        self._sent = itertools.count()
        self._inline_delivered = itertools.count()
        self._sendable: set[str] = set()  # topics that passed _check_sendable
        self._counts: dict[str, int] = {
            "received": 0,
            "protocol_errors": 0,
            "dropped_slow_peer": 0,
            "frames_lost_on_disconnect": 0,
            "disconnects_slow_peer": 0,
            "heartbeat_timeouts": 0,
            "frame_timeouts": 0,
        }

    # -- the contract: send is subclass-specific -----------------------------------------

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Wait for the next message on ``topic`` (a temporary subscription; nothing is buffered)."""
        waiter = Waiter()
        sub_id = self.subscribe(topic, waiter)
        try:
            waiter.event.wait(timeout)
        finally:
            self._unsubscribe_quietly(sub_id)
        return waiter.message

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """Await the next message on ``topic`` without blocking the running event loop."""
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop)
        sub_id = await asyncio.to_thread(self.subscribe, topic, waiter)
        assert waiter.future is not None
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:
            return waiter.message
        finally:
            self._unsubscribe_quietly(sub_id)

    def _unsubscribe_quietly(self, sub_id: str) -> None:
        if not self._closed:
            self.unsubscribe(sub_id)

    def stats(self) -> dict[str, Any]:
        """Counters: sent, received, delivered, drops and disconnects by cause, pending work."""
        with self._stats_lock:
            out: dict[str, Any] = dict(self._counts)
        out["sent"] = int(repr(self._sent)[6:-1])
        out["pending_deliveries"] = self._delivery.pending
        out["delivered"] = self._delivery.delivered + int(repr(self._inline_delivered)[6:-1])
        out["callback_errors"] = self._delivery.callback_errors + out.pop("callback_errors", 0)
        out["connections"] = len(self._links)
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._counts[key] = self._counts.get(key, 0) + n

    # -- checks shared by send/subscribe -----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"{type(self).__name__} is closed; create a new one")

    def _encode(self, message: Message) -> bytes:
        """Validate and encode ``message`` into a frame (sender-side size cap included)."""
        body = self._encode_body(message)
        return _pack(len(body)) + body

    def _encode_body(self, message: Message) -> bytes:
        """Validate and encode ``message`` into an envelope (a frame's body)."""
        if self._closed:
            self._check_open()
        topic = message.topic
        if topic not in self._sendable:
            self._check_sendable(topic)
        body = self.codec.encode(message)
        next(self._sent)
        return body

    def _check_sendable(self, topic: str) -> None:
        """Validate a topic not sent before; remember it (a bounded set) when it is fine."""
        validate_topic(topic)
        if topic.startswith(CONTROL_PREFIX):
            raise ValueError(
                f"topic {topic!r} is reserved: topics starting with {CONTROL_PREFIX!r} carry "
                "the TCP protocol's own control frames"
            )
        if len(self._sendable) >= _SENDABLE_LIMIT:
            self._sendable = set()
        self._sendable.add(topic)

    @staticmethod
    def _check_subscription(topic: str, callback: Callback, group: str | None) -> None:
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if group is not None and (not isinstance(group, str) or not group):
            raise ValueError(f"group must be a non-empty string, got {group!r}")

    # -- threads ---------------------------------------------------------------------------

    def _start_threads(self, name: str) -> None:
        self._delivery = DeliveryThread(f"{name}-delivery", self._after_delivery)
        self._delivery.start()
        self._io_thread = threading.Thread(target=self._io_loop, name=f"{name}-io", daemon=True)
        self._io_thread.start()

    def _deliver(self, batch: list[Delivery]) -> None:
        """Hand ``batch`` to the delivery thread (any thread may call it)."""
        self._delivery.put(batch)

    def _run_inline(self, callback: Callback, message: Message) -> None:
        """Run a :func:`~eventforge.transport.nonblocking` callback in this thread, isolated."""
        try:
            callback(message)
        except Exception:
            self._count("callback_errors")
            log.exception("subscription callback raised for topic %r", message.topic)
        else:
            next(self._inline_delivered)

    def _after_delivery(self, pending: int) -> None:
        if self._reads_paused and pending <= self.max_pending // 2:
            self._wake()

    # -- I/O thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def _mark_dirty(self, link: Link) -> None:
        with self._dirty_lock:
            self._dirty.add(link)
            if self._woken:
                return
            self._woken = True
        self._wake()

    def _queue_frame(self, link: Link, frame: bytes, *, control: bool = False) -> bool:
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
                if self._on_io_thread():
                    # A non-blocking callback sending from the I/O thread: waiting here would
                    # stop the very thread that makes room.
                    self._slow_peer_drop(link)
                    return False
                link.cond.wait(0.1)
            if link.state == LinkState.CLOSED:
                self._count("dropped_slow_peer")
                return False
            wake = link.offer(frame)
        if wake:
            self._mark_dirty(link)
        return True

    def _on_io_thread(self) -> bool:
        return threading.current_thread() is self._io_thread

    def _slow_peer_drop(self, link: Link) -> None:
        self._count("dropped_slow_peer")
        if not link.slow_warned:
            link.slow_warned = True
            log.warning(
                "send buffer to %s is full (%d bytes): dropping messages for it until it reads "
                "again; it is disconnected if it makes no progress for %.1fs",
                link.name,
                self.max_send_buffer,
                self.write_deadline,
            )

    def _io_append(
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
                self._slow_peer_drop(link)
                return False
            link.append(frame)
        dirty.add(link)
        return True

    def _io_loop(self) -> None:
        sel = self._sel
        next_tick = time.monotonic() + _TICK
        dirty: set[Link] = set()
        while not self._closed:
            try:
                events = sel.select(_TICK)
            except (OSError, ValueError):
                if self._is_closed():
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
                else:
                    self._on_listener_ready(data)
            with self._dirty_lock:
                if self._dirty:
                    dirty |= self._dirty
                    self._dirty = set()
                self._woken = False
            if dirty:
                for link in dirty:
                    if link.state != LinkState.CLOSED:
                        self._flush(link)
                dirty = set()
            self._check_backlog()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + _TICK
                try:
                    self._tick(now)
                except Exception:
                    log.exception("TCP transport housekeeping failed")

    def _is_closed(self) -> bool:
        return self._closed

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _on_listener_ready(self, data: object) -> None:
        """Accept connections (server only)."""

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
                        self._count("protocol_errors")
                        self._drop_link(link, "protocol", str(exc))
                        return
                    self._drop_link(link, "eof", "peer closed the connection")
                    return
                bodies.extend(link.decoder.feed(data))
                if not (link.tls and sock.pending()):  # type: ignore[attr-defined]
                    break
        except ProtocolError as exc:
            self._protocol_error(link, exc)
            return
        except OSError as exc:
            self._drop_link(link, "error", f"{type(exc).__name__}: {exc}")
            return
        link.last_recv = now = time.monotonic()
        link.ping_outstanding = False
        frame_progress(link, now, bool(bodies))
        if bodies:
            try:
                self._on_frames(link, bodies, dirty)
            except ProtocolError as exc:
                self._protocol_error(link, exc)

    def _on_writable(self, link: Link) -> None:
        if link.state == LinkState.TLS_HANDSHAKE:
            self._handshake(link)
            return
        self._flush(link)

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
            self._count("tls_failures")
            self._drop_link(link, "error", f"TLS handshake failed: {exc}")
            return
        link.state = LinkState.HELLO
        self._set_events(link, _READ)
        if sock.pending():
            # The hello may have arrived with the last handshake flight and sit decrypted in
            # the TLS buffer, where the selector cannot see it.
            dirty: set[Link] = set()
            self._on_readable(link, dirty)
            for other in dirty:
                self._flush(other)

    def _flush(self, link: Link) -> None:
        try:
            result = link.flush()
        except OSError as exc:
            self._drop_link(link, "error", f"{type(exc).__name__}: {exc}")
            return
        want = _WRITE if result == WriteResult.PENDING else 0
        read = 0 if self._reads_paused else _READ
        self._set_events(link, read | want)

    def _set_events(self, link: Link, events: int) -> None:
        if link.state == LinkState.CLOSED or events == link.events:
            return
        try:
            if link.events == 0:
                if events:
                    self._sel.register(link.sock, events, link)
            elif events == 0:
                self._sel.unregister(link.sock)
            else:
                self._sel.modify(link.sock, events, link)
        except (KeyError, ValueError, OSError):
            return
        link.events = events

    def _register(self, link: Link) -> None:
        """Start watching ``link`` (I/O thread, or before the I/O thread starts)."""
        self._links[link.id] = link
        events = _READ
        if link.state == LinkState.TLS_HANDSHAKE:
            events = _READ
        self._set_events(link, events)

    def _check_backlog(self) -> None:
        pending = self._delivery.pending
        if not self._reads_paused and pending > self.max_pending:
            self._reads_paused = True
            for link in list(self._links.values()):
                self._set_events(link, link.events & ~_READ)
        elif self._reads_paused and pending <= self.max_pending // 2:
            self._reads_paused = False
            now = time.monotonic()
            for link in list(self._links.values()):
                link.last_recv = now
                link.frame_started = now if link.frame_started else 0.0
                self._set_events(link, link.events | _READ)

    def _protocol_error(self, link: Link, exc: ProtocolError) -> None:
        """Refuse bad input: count it, tell the peer why (best effort), close the link."""
        self._count("protocol_errors")
        reason = str(exc)
        try:
            with link.lock:
                link.frames = [control_frame(ERROR, {"code": "protocol", "message": reason})]
                link.partial = None
                link.write()
        except OSError:
            pass
        self._drop_link(link, "protocol", reason)

    def _drop_link(self, link: Link, cause: str, reason: str) -> None:
        if link.state == LinkState.CLOSED:
            return
        if link.events:
            try:
                self._sel.unregister(link.sock)
            except (KeyError, ValueError, OSError):
                pass
            link.events = 0
        self._links.pop(link.id, None)
        level = logging.INFO if cause in ("eof", "closed") else logging.WARNING
        log.log(level, "closed connection %s: %s", link.name, reason)
        link.close_socket()
        self._on_link_closed(link, cause, reason)

    def _tick(self, now: float) -> None:
        check = self.limits.check
        for link in list(self._links.values()):
            if link.state == LinkState.CLOSED:
                continue
            verdict = check(link, now, self._reads_paused)
            if verdict is None:
                continue
            if isinstance(verdict, str):  # the only other verdict: a ping is due
                link.ping_outstanding = True
                with link.lock:
                    link.append(control_frame(PING, None))
                self._flush(link)
                continue
            counter, cause, reason = verdict
            self._count(counter)
            self._drop_link(link, cause, reason)
        self._on_tick(now)

    def _on_tick(self, now: float) -> None:
        """Extra housekeeping of a subclass (reconnects)."""

    def _handle_common_control(self, link: Link, message: Message, dirty: set[Link]) -> bool:
        """Handle ping / pong / error; return whether ``message`` was one of them."""
        topic = message.topic
        if topic == PING:
            self._io_append(link, control_frame(PONG, None), dirty, control=True)
            return True
        if topic == PONG:
            return True
        if topic == ERROR:
            payload = message.payload if isinstance(message.payload, dict) else {}
            self._drop_link(
                link, "closed", f"peer reported an error: {str(payload.get('message'))[:200]}"
            )
            return True
        return False

    # -- subclass hooks --------------------------------------------------------------------

    @abstractmethod
    def _on_frames(self, link: Link, bodies: list[bytes], dirty: set[Link]) -> None:
        """Handle the frames one read produced (I/O thread)."""

    @abstractmethod
    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        """Forget a link that just closed (I/O thread)."""

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self, flush_timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``flush_timeout``), stop both threads, close every socket."""
        io = self._io_thread
        if io is not None and io is not threading.current_thread():
            deadline = time.monotonic() + flush_timeout
            while time.monotonic() < deadline:
                waiting = [lk for lk in list(self._links.values()) if lk.out_size]
                if not waiting:
                    break
                for link in waiting:
                    self._mark_dirty(link)
                time.sleep(0.002)
        self._closed = True
        self._wake()
        if io is not None and io is not threading.current_thread():
            io.join(timeout=5)
        for link in list(self._links.values()):
            with link.lock:
                try:
                    link.write()
                except OSError:
                    pass
            link.close_socket()
        self._links.clear()
        self._delivery.stop()
        try:
            self._sel.close()
        except (OSError, ValueError):
            pass
        self._wake_r.close()
        self._wake_w.close()
