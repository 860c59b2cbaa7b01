"""One TCP connection: its socket, its frame decoder and its bounded outgoing frame queue."""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from typing import Any

from .framing import FrameDecoder

__all__ = ["Link", "LinkState", "WriteResult"]

_ids = itertools.count(1)
_monotonic = time.monotonic

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
_MAX_WRITE = 512 * 1024
DIRECT_GAP = 50e-6
"""A frame queued more than this after the previous one on a link is written at once by the
queuing thread (lowest latency); closer ones are left to the I/O thread, which sends them
together (highest throughput)."""


class LinkState:
    """Where a link is in its life."""

    TLS_HANDSHAKE = "tls-handshake"
    HELLO = "hello"
    OPEN = "open"
    CLOSED = "closed"


class WriteResult:
    """What :meth:`Link.write` achieved."""

    DONE = 0
    PENDING = 1


class Link:
    """A connection and its buffers.

    Outgoing frames are kept whole in ``frames`` (the head of a frame cut by a short write is
    kept apart in ``partial``) so that after a disconnect the frames that never left can be
    replayed on the next connection while a half-written one is dropped. ``lock`` guards the
    outgoing side; the incoming side belongs to the I/O thread alone.
    """

    __slots__ = (
        "cond",
        "count_only_zero",
        "counting",
        "decoder",
        "events",
        "features",
        "flush_pending",
        "frame_started",
        "frames",
        "hello_deadline",
        "id",
        "last_enqueue",
        "last_recv",
        "last_write_progress",
        "lock",
        "name",
        "out_size",
        "partial",
        "peer",
        "ping_outstanding",
        "refusal",
        "route",
        "slow_warned",
        "sock",
        "state",
        "tls",
        "writing",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        max_frame_size: int,
        decoder: FrameDecoder | None = None,
    ) -> None:
        now = time.monotonic()
        self.id = next(_ids)
        self.sock = sock
        self.peer = peer
        self.name = peer
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.decoder = decoder if decoder is not None else FrameDecoder(max_frame_size)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.frames: list[bytes] = []
        self.partial: bytes | None = None
        self.out_size = 0
        self.state = LinkState.HELLO
        self.events = 0
        self.flush_pending = False
        self.last_recv = now
        self.last_write_progress = now
        self.last_enqueue = 0.0
        self.hello_deadline = 0.0
        self.refusal: str | None = None  # server: why this link is to be refused after the hello
        self.frame_started = 0.0  # when the unfinished frame in the decoder began (0: none)
        self.ping_outstanding = False
        self.route: dict[str, Any] | None = None  # client: the $tcp.route before a message
        self.counting: str | None = None  # server: id of a COUNT frame awaiting its message
        self.count_only_zero = False  # server: answer that COUNT only if nobody took it
        self.features: frozenset[str] = frozenset()  # client: what the server's welcome offers
        self.slow_warned = False
        self.writing = False  # the I/O thread is in a send() made outside ``lock``

    def append(self, frame: bytes) -> None:
        """Queue one whole frame (caller holds ``lock``)."""
        if not self.out_size:
            self.last_write_progress = time.monotonic()
        self.frames.append(frame)
        self.out_size += len(frame)

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` (caller holds ``lock``); return whether the I/O thread must flush.

        The first frame after a quiet spell is written at once by the calling thread; frames
        that follow closely stay queued for the I/O thread, which coalesces them into few
        writes (TCP_NODELAY stays on, so nothing waits for a timer).
        """
        now = _monotonic()
        if not self.out_size:
            self.last_write_progress = now
        self.frames.append(frame)
        self.out_size += len(frame)
        quiet = now - self.last_enqueue > DIRECT_GAP
        self.last_enqueue = now
        if quiet and not self.tls and self.partial is None and len(self.frames) == 1:
            # (write() leaves the frame queued while the I/O thread is sending.)
            try:
                if self.write() == WriteResult.DONE:
                    return False
            except OSError:
                pass  # the I/O thread sees the broken socket and closes the link
        if self.flush_pending:
            return False
        self.flush_pending = True
        return True

    def write(self) -> int:
        """Send as much queued data as the socket takes now (caller holds ``lock``).

        Returns :attr:`WriteResult.DONE` when everything left, else ``PENDING``. Raises
        ``OSError`` when the connection is broken.
        """
        if self.writing:
            return WriteResult.PENDING  # the I/O thread is sending; it writes the rest
        batch = self._take()
        if batch is None:
            return WriteResult.DONE
        data, taken = batch
        try:
            sent = self.sock.send(data)
        except _WOULD_BLOCK:
            return WriteResult.PENDING
        return self._account(sent, len(data), taken)

    def flush(self) -> int:
        """Like :meth:`write`, for the I/O thread: the ``send`` itself runs without ``lock``.

        Publishers keep appending frames while the bytes go out, instead of waiting for the
        system call; meanwhile :attr:`writing` keeps them from writing directly (order).
        """
        with self.lock:
            self.flush_pending = False
            if self.writing:
                return WriteResult.PENDING
            batch = self._take()
            if batch is None:
                return WriteResult.DONE
            self.writing = True
        data, taken = batch
        sent = 0
        try:
            sent = self.sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        finally:
            with self.lock:
                self.writing = False
                result = self._account(sent, len(data), taken) if sent > 0 else None
        if result is None:
            return WriteResult.PENDING
        return result

    def _take(self) -> tuple[bytes, int] | None:
        """The bytes of the next write and how many whole frames they include (under ``lock``)."""
        frames = self.frames
        partial = self.partial
        if partial is None and not frames:
            return None
        pieces: list[bytes] = [partial] if partial is not None else []
        size = len(partial) if partial is not None else 0
        taken = 0
        for frame in frames:
            if size >= _MAX_WRITE:
                break
            pieces.append(frame)
            size += len(frame)
            taken += 1
        return (pieces[0] if len(pieces) == 1 else b"".join(pieces)), taken

    def _account(self, sent: int, size: int, taken: int) -> int:
        """Drop what a write of ``size`` bytes (``taken`` frames) sent (under ``lock``)."""
        if sent <= 0:
            return WriteResult.PENDING
        frames = self.frames
        partial = self.partial
        self.last_write_progress = time.monotonic()
        self.out_size -= sent
        if sent == size:
            self.partial = None
            del frames[:taken]
        else:
            remaining = sent
            if partial is not None:
                if remaining < len(partial):
                    self.partial = partial[remaining:]
                    self.cond.notify_all()
                    return WriteResult.PENDING
                remaining -= len(partial)
                self.partial = None
            index = 0
            while remaining >= len(frames[index]):
                remaining -= len(frames[index])
                index += 1
            if remaining:
                self.partial = frames[index][remaining:]
                index += 1
            del frames[:index]
        self.cond.notify_all()
        return WriteResult.DONE if self.partial is None and not frames else WriteResult.PENDING

    def take_unsent(self) -> tuple[list[bytes], int]:
        """Remove and return the whole frames that never left, and the count of cut ones."""
        with self.lock:
            frames = self.frames
            cut = 1 if self.partial is not None else 0
            self.frames = []
            self.partial = None
            self.out_size = 0
            self.cond.notify_all()
            return frames, cut

    def close_socket(self) -> None:
        """Close the socket; idempotent and quiet."""
        self.state = LinkState.CLOSED
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            self.cond.notify_all()

    def __repr__(self) -> str:
        return f"Link(#{self.id} {self.peer}, {self.state}, out={self.out_size}B)"
