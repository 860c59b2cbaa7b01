"""TCPClientTransport: one connection to a :class:`TCPServerTransport`, kept alive.

A client announces its subscriptions to the server and publishes everything to it; the server
routes. Messages for the client's own fan-out subscriptions are delivered locally at once (they
do not travel to the server and back); group deliveries are the server's choice, so they may
come back. When the link drops the client reconnects by itself along the kit's
:class:`~eventforge.transport.Backoff`, re-announces every subscription and sends the frames
that never left (:mod:`eventforge_tcp._connection`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from eventforge.deadlines import deadline_of
from eventforge.errors import ProtocolError, TransportError
from eventforge.message import Message, new_id
from eventforge.transport import Backoff, Callback

from ._base import Handoff, TCPTransportBase
from ._connection import CONNECTION_COUNTERS, Connection
from ._control import ACK, COUNT, COUNTED, FEATURE_COUNT, ROUTE, UNSUB, control_frame
from ._hello import ClientHello
from ._link import Link, LinkState
from ._options import CLIENT_OPTIONS, check_port, read_url
from ._requests import Answers, NobodyReports, only_zero_count
from ._subscriptions import Sub, Subscriptions
from .errors import AuthenticationError
from .framing import CONTROL_PREFIX, HEADER
from .server import TCPServerTransport

__all__ = ["TCPClientTransport"]

log = logging.getLogger("eventforge.transports.tcp")

_OPEN = LinkState.OPEN
_pack = HEADER.pack


class TCPClientTransport(TCPTransportBase):
    """Connect to a :class:`TCPServerTransport` at ``host:port`` and join its pub/sub space.

    Call :meth:`connect` before use; it raises at once when the server cannot be reached or
    refuses the ``token``. Afterwards the link heals itself: ``reconnect=True`` retries with
    backoff from ``reconnect_delay`` doubling up to ``reconnect_max_delay`` (with jitter).
    While disconnected, ``offline="buffer"`` (default) keeps published frames in a buffer of
    ``max_send_buffer`` bytes and sends them after the reconnect; when that buffer is full,
    ``send`` waits up to ``send_timeout`` seconds and then raises :class:`TransportError`.
    ``offline="raise"`` raises at once instead. A wrong token is final
    (:class:`~eventforge_tcp.errors.AuthenticationError`): no retry storm.
    :meth:`send_counted` waits up to ``count_timeout`` seconds for the server's count.
    The options are listed in ``eventforge_tcp._options.CLIENT_OPTIONS`` (and the TCP guide).
    """

    name: ClassVar[str] = "tcp"

    def __init__(self, host: str = "localhost", port: int = 9090, **options: Any) -> None:
        values = CLIENT_OPTIONS.read(keywords=options)
        super().__init__(values, CONNECTION_COUNTERS)
        self.host = host
        self.port = check_port(port, allow_zero=False)
        self.server_hostname: str | None = values["server_hostname"]
        self.client_name: str | None = values["client_name"]
        self.connect_timeout: float = values["connect_timeout"]
        self.reconnect: bool = values["reconnect"]
        self.reconnect_delay: float = values["reconnect_delay"]
        self.reconnect_max_delay: float = values["reconnect_max_delay"]
        self.offline: str = values["offline"]
        self.send_timeout: float = values["send_timeout"]
        self.subscribe_timeout: float = values["subscribe_timeout"]
        self.count_timeout: float = values["count_timeout"]
        self._count_unsupported_warned = False
        self._lifecycle = threading.Lock()
        self._subs = Subscriptions()
        self._index = self._subs.index
        self._answers = Answers()
        self._nobody = NobodyReports()  # requests that want to hear only of "nobody"
        self._started = False
        hello = ClientHello(
            host=host,
            port=self.port,
            url=self.url,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
            token=self._token,
            client_name=self.client_name,
            connect_timeout=self.connect_timeout,
            max_frame_size=self.max_frame_size,
        )
        self._conn = Connection(
            hello,
            io=self._io,
            counts=self._counts,
            codec=self.codec,
            announce=self._subs.frames,
            is_closed=self._is_closed,
            check_open=self._check_open,
            reconnect=self.reconnect,
            backoff=Backoff(
                initial=self.reconnect_delay,
                cap=max(self.reconnect_delay, self.reconnect_max_delay),
            ),
            offline=self.offline,
            max_send_buffer=self.max_send_buffer,
            send_timeout=self.send_timeout,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> TCPClientTransport | TCPServerTransport:
        """A connected client from ``tcp[s]://[:token@]host:port[?option=value&...]``.

        With ``?listen=1`` the URL names a server instead: a started
        :class:`TCPServerTransport` bound to ``host:port`` is returned (the ``tcp`` entry of
        the registry is this class, so both kinds of URL come here). Keyword ``options`` win
        over the URL's; see :mod:`eventforge_tcp._options` for what a URL may carry.
        """
        address = read_url(url, options)
        if address.listen:
            return TCPServerTransport(address.host, address.port, **address.options).start()
        return cls(address.host, address.port, **address.options).connect()

    @property
    def url(self) -> str:
        """``tcp://host:port`` (``tcps://`` with TLS) of the server."""
        scheme = "tcps" if self.ssl_context is not None else "tcp"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether the link to the server is up right now."""
        return self._conn.up

    def connect(self) -> TCPClientTransport:
        """Open the link (TCP, TLS when configured, hello); return ``self``. Idempotent.

        Raises :class:`TransportError` when the server cannot be reached in
        ``connect_timeout`` and :class:`AuthenticationError` when it refuses the token.
        """
        self._check_open()
        with self._lifecycle:
            if self._started:
                return self
            leftover = self._conn.open()
            self._started = True
            self._start_threads(f"eventforge-tcp-client:{self.host}:{self.port}")
            link = self._conn.link
            if link is not None and link.frames:
                self._mark_dirty(link)
        if leftover:
            log.debug("ignored %d frames that followed the welcome", len(leftover))
        return self

    # -- the contract ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Publish ``message`` to the whole space (local fan-out subscribers get it at once)."""
        if self._closed:
            self._check_open()
        if message.topic not in self._sendable:
            self._check_sendable(message.topic)
        body = self.codec.encode(message)
        self._bump_sent()
        frame = _pack(len(body)) + body
        if self._subs.fanout and self._started:
            local = self._index.match(message.topic)
            if local:
                self._deliver_local(local, self.codec.decode(body))
        conn = self._conn
        link = conn.link
        if link is not None and conn.fatal is None:
            # The common case, inline: the link is up and its buffer has room.
            with link.lock:
                if link.state == _OPEN and link.out_size + len(frame) <= self.max_send_buffer:
                    wake: bool | None = link.offer(frame)
                else:
                    wake = None
            if wake is not None:
                if wake:
                    self._mark_dirty(link)
                return
        self._push(frame)

    def send_counted(self, message: Message) -> int | None:
        """Publish ``message`` and return how many receivers took it (for unroutable policies).

        The count is this client's own matching plain subscriptions plus what the server
        reports: its local subscriptions, the other clients it forwarded the message to and
        the group members it picked. The message travels on the same connection as earlier
        :meth:`send` calls, so their order is kept. Unlike :meth:`send` it is never held while
        disconnected: it raises :class:`TransportError` instead (the message was not sent),
        and also when the link drops or no count arrives within ``count_timeout`` seconds (the
        message may then still be delivered). Against a server that does not offer counting
        (an older version) the message is sent as by :meth:`send` and ``None`` is returned.
        A request (a message with ``reply_to`` and a deadline) waits for its count no longer
        than its deadline: past it, ``None`` is returned (the request then simply times out).
        """
        frame = self._encode(message)
        self._check_started()
        link = self._conn.link
        if link is not None and link.state == LinkState.OPEN and FEATURE_COUNT not in link.features:
            if not self._count_unsupported_warned:
                self._count_unsupported_warned = True
                log.warning(
                    "%s does not offer counted publishes (an older server); messages are sent "
                    "without knowing whether anyone received them",
                    self.url,
                )
            self.send(message)
            return None
        local = self._index.match(message.topic)
        marker = new_id()
        answer = self._answers.expect(marker)
        try:
            self._push(control_frame(COUNT, None, frame_id=marker) + frame, hold=False)
            if local:
                self._deliver_local(local, self.codec.decode(frame[4:]))
            limit = self.count_timeout
            deadline = deadline_of(message) if message.reply_to is not None else None
            if deadline is not None:
                limit = min(limit, max(0.0, deadline - time.time()))
            answered = answer.event.wait(limit)
        finally:
            self._answers.forget(marker)
        payload = answer.payload
        if isinstance(payload, dict):
            count = payload.get("count")
            if type(count) is int and count >= 0:
                return len(local) + count
            raise TransportError(f"{self.url} answered a counted publish with {payload!r}")
        self._check_open()
        if not answered and deadline is not None and limit < self.count_timeout:
            return None  # the caller's deadline came first: its request times out
        if not answered:
            raise TransportError(
                f"{self.url} did not count message {message.id} within {self.count_timeout}s; "
                "it may still be delivered. Raise count_timeout if the server is busy"
            )
        raise TransportError(
            f"connection to {self.url} was lost before the server counted message "
            f"{message.id}; it is sent again after the reconnect, so it may still be delivered"
        )

    def send_reporting_nobody(self, message: Message, nobody: Callable[[], None]) -> None:
        """Publish ``message`` and call ``nobody()`` if the server reports that nobody took it.

        What requests use to fail fast without waiting for a count: the message goes out
        behind a ``$tcp.count`` that asks the server to answer only when nobody received it,
        so a delivered request costs no extra frame. Like :meth:`send_counted` it is never
        held while disconnected (:class:`TransportError` at once, nothing sent). ``nobody``
        runs on the I/O thread and must return at once; it is not called when the link drops
        before the answer, nor after the message's deadline (or ``count_timeout``) passed.
        """
        frame = self._encode(message)
        self._check_started()
        local = self._index.match(message.topic) if self._subs.fanout else ()
        marker = new_id()
        if not local:  # else someone took it here: the server's answer cannot be "nobody"
            deadline = deadline_of(message) or time.time() + self.count_timeout
            self._nobody.expect(marker, deadline, nobody)
        try:
            self._push(only_zero_count(marker) + frame, hold=False)
        except BaseException:
            self._nobody.forget(marker)
            raise
        if local:
            self._deliver_local(local, self.codec.decode(frame[4:]))

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Subscribe ``callback``; returns once the server confirmed it (or the link is down)."""
        self._check_open()
        self._check_subscription(topic, callback, group)
        sid = f"s{next(self._ids)}"
        sub = self._subs.add(sid, topic, group, callback)
        frame_id = new_id()
        answer = self._answers.expect(frame_id)
        try:
            sent = self._conn.send_control(sub.frame(frame_id))
            if sent and not answer.event.wait(self.subscribe_timeout):
                log.warning(
                    "%s did not confirm subscription %r within %.1fs; it stays registered "
                    "and is announced again after a reconnect",
                    self.url,
                    topic,
                    self.subscribe_timeout,
                )
        finally:
            self._answers.forget(frame_id)
        payload = answer.payload
        if isinstance(payload, dict) and payload.get("ok") is False:
            self._subs.forget(sid)
            raise ValueError(f"server refused subscription {topic!r}: {payload.get('error')}")
        return sid

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; return whether it existed."""
        if not self._subs.forget(subscription_id):
            return False
        if not self._closed:
            self._conn.send_control(control_frame(UNSUB, {"sid": subscription_id}))
        return True

    def close(self) -> None:
        """Flush what is queued, close the link and stop the threads. Idempotent."""
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        self._shutdown()
        self._conn.outbox.clear()
        self._nobody.clear()
        self._answers.release()

    def stats(self) -> dict[str, Any]:
        """Counters of the base transport plus reconnects and frames held while offline."""
        out = super().stats()
        out["connected"] = self.connected
        out["auth_failed"] = isinstance(self._conn.fatal, AuthenticationError)
        out["held_frames"] = len(self._conn.outbox)
        out["subscriptions"] = len(self._subs)
        return out

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif not self._started:
            state = "not connected"
        else:
            state = "connected" if self.connected else "reconnecting"
        auth = ", token=***" if self._token else ""
        return f"TCPClientTransport({self.url}, {state}{auth})"

    # -- internals: publishing ---------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            self._check_open()
            raise TransportError(f"{self!r} is not connected: call connect() before sending")

    def _push(self, frame: bytes, *, hold: bool = True) -> None:
        """Queue ``frame`` on the link; while disconnected hold it (``hold``) or raise."""
        self._check_started()
        self._conn.push(frame, hold=hold)

    def _deliver_local(self, subs: tuple[Sub, ...], message: Message) -> None:
        """Deliver a message published here to this client's own matching subscriptions."""
        batch: list[Handoff] = []
        for sub in subs:
            if sub.inline:
                self._run_inline(sub.callback, message)
            else:
                batch.append((sub.callback, message))
        self._deliver(batch)

    # -- internals: the link (I/O thread) ------------------------------------------------------

    def _is_closed(self) -> bool:
        return self._closed

    def _on_tick(self, now: float) -> None:
        self._conn.tick(now)

    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        if self._conn.lost(link, reason):
            self._nobody.clear()  # an answer can no longer come
            self._answers.release()

    def _on_frames(self, link: Link, bodies: list[bytes], dirty: set[Link]) -> None:
        decode = self.codec.decode
        run_inline = self._run_inline
        received = 0
        batch: list[Handoff] = []
        for body in bodies:
            message = decode(body)
            topic = message.topic
            if topic.startswith(CONTROL_PREFIX):
                self._on_control(link, message, dirty)
                if link.state == LinkState.CLOSED:
                    return
                continue
            received += 1
            route = link.route
            targets: tuple[Sub, ...] | list[Sub]
            if route is None:
                targets = self._index.match(topic)
            else:
                link.route = None
                targets = self._subs.routed(topic, route)
            for sub in targets:
                if sub.inline:
                    run_inline(sub.callback, message)
                else:
                    batch.append((sub.callback, message))
        if received:
            self._counts.bump("received", received)
        self._deliver(batch)

    def _on_control(self, link: Link, message: Message, dirty: set[Link]) -> None:
        if link.route is not None:
            raise ProtocolError("a route frame must be followed by a message frame")
        topic = message.topic
        if topic == ROUTE:
            payload = message.payload
            if (
                not isinstance(payload, dict)
                or not isinstance(payload.get("sids"), list)
                or not isinstance(payload.get("fanout", True), bool)
            ):
                raise ProtocolError("$tcp.route needs a 'sids' list and a 'fanout' bool")
            link.route = payload
        elif topic in (ACK, COUNTED):
            key = message.correlation_id or ""
            if not self._answers.answered(key, message.payload) and self._nobody:
                self._nobody.heard(key, message.payload)
        elif not self._io.common_control(link, message, dirty):
            raise ProtocolError(f"unknown control frame {topic!r}")
