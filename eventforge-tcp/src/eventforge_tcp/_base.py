"""What the TCP server and client share: limits, encoding, delivery to callbacks, stats.

Each transport has two threads. The I/O thread (:mod:`eventforge_tcp._io`) owns every socket.
Callbacks do not run on it: decoded messages go, a batch per read, to the delivery thread (the
kit's :class:`~eventforge.transport.BatchDeliveryThread`), so a slow handler cannot stall
heartbeats or other connections. When more than ``max_pending`` deliveries wait, the I/O
thread stops reading (TCP pushes back on the peers) until the backlog halves; nothing is
dropped. The exception are callbacks marked :func:`~eventforge.transport.nonblocking` (reply
waiters, hand-offs to handler threads): they run on the I/O thread at once, which saves a
thread hand-off per message and lets a handler on the delivery thread wait for a reply.
"""

from __future__ import annotations

import itertools
import logging
import ssl
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import BatchDeliveryThread, Callback, Transport
from eventforge.wire import WireCodec

from ._capabilities import CAPABILITIES
from ._io import IO_COUNTERS, IOThread
from ._link import Link
from ._liveness import Limits
from ._stats import Counts
from .framing import CONTROL_PREFIX, HEADER

__all__ = ["Handoff", "TCPTransportBase"]

log = logging.getLogger("eventforge.transports.tcp")

Handoff = tuple[Callback, Message]
"""A callback and the message it is to be called with, handed to the delivery thread."""

_BASE_COUNTERS = (
    *IO_COUNTERS,
    "sent",
    "received",
    "inline_delivered",
    "inline_errors",
    "frames_lost_on_disconnect",
)
_pack = HEADER.pack
_SENDABLE_LIMIT = 4096


class TCPTransportBase(Transport):
    """The machinery shared by :class:`TCPServerTransport` and :class:`TCPClientTransport`.

    ``values`` are the transport's options as its option table read them.
    """

    name: ClassVar[str] = "tcp"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(self, values: Mapping[str, Any], counters: tuple[str, ...]) -> None:
        max_frame_size: int = values["max_frame_size"]
        max_send_buffer: int = values["max_send_buffer"]
        if max_send_buffer < max_frame_size:
            raise ConfigurationError(
                f"max_send_buffer must be >= max_frame_size ({max_frame_size}), got "
                f"{max_send_buffer!r}",
                key="transport.max_send_buffer",
            )
        self.limits = Limits(
            heartbeat_interval=values["heartbeat_interval"],
            heartbeat_timeout=values["heartbeat_timeout"],
            write_deadline=values["write_deadline"],
            frame_timeout=values["frame_timeout"],
        )
        self._token: str | None = values["token"]
        self.ssl_context: ssl.SSLContext | None = values["ssl_context"]
        self.max_frame_size = max_frame_size
        self.max_send_buffer = max_send_buffer
        self.heartbeat_interval = self.limits.heartbeat_interval
        self.heartbeat_timeout = self.limits.heartbeat_timeout
        self.write_deadline = self.limits.write_deadline
        self.frame_timeout = self.limits.frame_timeout
        self.max_pending: int = values["max_pending"]
        self.trusted: bool = values["trusted"]
        self.codec = WireCodec(values["serializer"], trusted=self.trusted, max_size=max_frame_size)
        self._closed = False
        self._counts = Counts((*_BASE_COUNTERS, *counters))
        self._bump_sent = self._counts["sent"].bump
        self._bump_inline = self._counts["inline_delivered"].bump
        self._delivery: BatchDeliveryThread | None = None
        self._io = IOThread(
            limits=self.limits,
            max_send_buffer=max_send_buffer,
            max_pending=self.max_pending,
            counts=self._counts,
            on_frames=self._on_frames,
            on_link_closed=self._on_link_closed,
            on_tick=self._on_tick,
            on_listener=self._on_listener_ready,
        )
        self._mark_dirty = self._io.mark_dirty
        self._ids = itertools.count(1)
        self._sendable: set[str] = set()  # topics that passed _check_sendable

    def stats(self) -> dict[str, Any]:
        """Counters: sent, received, delivered, drops and disconnects by cause, pending work."""
        out: dict[str, Any] = self._counts.snapshot()
        inline_delivered = out.pop("inline_delivered")
        inline_errors = out.pop("inline_errors")
        delivery = self._delivery
        out["pending_deliveries"] = delivery.depth() if delivery is not None else 0
        out["delivered"] = inline_delivered + (delivery.delivered if delivery else 0)
        out["callback_errors"] = inline_errors + (delivery.errors if delivery else 0)
        out["connections"] = len(self._io.links)
        return out

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
        self._bump_sent()
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

    # -- threads and delivery ------------------------------------------------------------------

    def _start_threads(self, name: str) -> None:
        delivery = BatchDeliveryThread(
            f"{name}-delivery", None, None, after_batch=self._io.backlog_drained
        )
        self._delivery = delivery
        self._io.backlog = delivery.depth
        self._io.start(f"{name}-io")

    def _deliver(self, batch: list[Handoff]) -> None:
        """Hand ``batch`` to the delivery thread (any thread, once the transport started)."""
        if batch:
            delivery = self._delivery
            if delivery is None:
                raise TransportError(f"{self!r} is not started: no delivery thread yet")
            delivery.put_batch(batch)

    def _run_inline(self, callback: Callback, message: Message) -> None:
        """Run a :func:`~eventforge.transport.nonblocking` callback in this thread, isolated."""
        try:
            callback(message)
        except Exception:
            self._counts.bump("inline_errors")
            log.exception("subscription callback raised for topic %r", message.topic)
        else:
            self._bump_inline()

    def _shutdown(self, flush_timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``flush_timeout``), stop both threads, close every socket."""
        self._io.drain(flush_timeout)
        self._closed = True
        self._io.stop()
        if self._delivery is not None:
            self._delivery.stop()

    # -- what the I/O thread calls -------------------------------------------------------------

    @abstractmethod
    def _on_frames(self, link: Link, bodies: list[bytes], dirty: set[Link]) -> None:
        """Handle the frames one read produced (I/O thread)."""

    @abstractmethod
    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        """Forget a link that just closed (I/O thread)."""

    def _on_tick(self, now: float) -> None:
        """Extra housekeeping of a subclass (reconnects), a few times a second (I/O thread)."""

    def _on_listener_ready(self, data: object) -> None:
        """Accept connections (server only; I/O thread)."""
