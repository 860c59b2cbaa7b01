"""TCPClientTransport: one connection to a :class:`TCPServerTransport`, kept alive.

A client announces its subscriptions to the server and publishes everything to it; the server
routes. Messages for the client's own fan-out subscriptions are delivered locally at once (they
do not travel to the server and back); group deliveries are the server's choice, so they may
come back. When the link drops the client reconnects by itself with capped, jittered backoff,
re-announces every subscription and sends the frames that never left.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from eventforge.deadlines import deadline_of
from eventforge.errors import ConfigurationError, ProtocolError, TransportError
from eventforge.message import Message, new_id
from eventforge.topics import TopicIndex
from eventforge.transport import Callback, is_nonblocking

from ._base import TCPTransportBase
from ._control import ACK, COUNT, COUNTED, FEATURE_COUNT, ROUTE, SUB, UNSUB, control_frame
from ._link import Link, LinkState
from ._liveness import DEFAULT_FRAME_TIMEOUT
from ._requests import NobodyReports, drop_abandoned_requests, only_zero_count
from .errors import AuthenticationError
from .framing import (
    CONTROL_PREFIX,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    PROTOCOL,
    PROTOCOL_VERSION,
    FrameDecoder,
    encode_json_frame,
    parse_welcome,
)

__all__ = ["TCPClientTransport"]

log = logging.getLogger("eventforge.transports.tcp")

_OFFLINE_MODES = ("buffer", "raise")
_OPEN = LinkState.OPEN
_pack = HEADER.pack


class _Sub:
    __slots__ = ("callback", "group", "inline", "key", "pattern", "sid")

    def __init__(self, sid: str, pattern: str, group: str | None, callback: Callback) -> None:
        self.sid = sid
        self.pattern = pattern
        self.group = group
        self.callback = callback
        self.inline = is_nonblocking(callback)
        self.key = 0


class _Ack:
    __slots__ = ("event", "payload")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.payload: Any = None


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
    """

    name: ClassVar[str] = "tcp"

    def __init__(
        self,
        host: str = "localhost",
        port: int = 9090,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        client_name: str | None = None,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        reconnect_delay: float = 0.05,
        reconnect_max_delay: float = 2.0,
        offline: str = "buffer",
        send_timeout: float = 10.0,
        subscribe_timeout: float = 5.0,
        count_timeout: float = 5.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_send_buffer: int = 8 * 1024 * 1024,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float | None = None,
        write_deadline: float = 30.0,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_pending: int = 10_000,
        serializer: str | None = None,
        trusted: bool = False,
    ) -> None:
        super().__init__(
            token=token,
            ssl_context=ssl_context,
            max_frame_size=max_frame_size,
            max_send_buffer=max_send_buffer,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            write_deadline=write_deadline,
            frame_timeout=frame_timeout,
            max_pending=max_pending,
            serializer=serializer,
            trusted=trusted,
        )
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise ConfigurationError(f"port must be an int in 1..65535, got {port!r}", key="port")
        if offline not in _OFFLINE_MODES:
            raise ConfigurationError(
                f"offline must be one of {', '.join(_OFFLINE_MODES)}, got {offline!r}",
                key="offline",
            )
        self.host = host
        self.port = port
        self.server_hostname = server_hostname
        self.client_name = client_name
        self.connect_timeout = float(connect_timeout)
        self.reconnect = reconnect
        self.reconnect_delay = float(reconnect_delay)
        self.reconnect_max_delay = float(reconnect_max_delay)
        self.offline = offline
        self.send_timeout = float(send_timeout)
        self.subscribe_timeout = float(subscribe_timeout)
        self.count_timeout = float(count_timeout)
        self._count_unsupported_warned = False
        self._lock = threading.RLock()
        self._index: TopicIndex[_Sub] = TopicIndex()
        self._fanout_subs = 0  # plain (non-group) subscriptions in _index
        self._subs: dict[str, _Sub] = {}
        self._acks: dict[str, _Ack] = {}
        self._nobody = NobodyReports()  # requests that want to hear only of "nobody"
        self._link: Link | None = None
        self._started = False
        self._fatal: TransportError | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        self._state = threading.Condition(threading.Lock())
        self._attempts = 0
        self._next_attempt = 0.0
        self._disconnected_at: float | None = None
        self._counts.update(reconnects=0, connect_failures=0, held_requests_dropped=0)

    @property
    def url(self) -> str:
        """``tcp://host:port`` (``tcps://`` with TLS) of the server."""
        scheme = "tcps" if self.ssl_context is not None else "tcp"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether the link to the server is up right now."""
        link = self._link
        return link is not None and link.state == LinkState.OPEN

    def connect(self) -> TCPClientTransport:
        """Open the link (TCP, TLS when configured, hello); return ``self``. Idempotent.

        Raises :class:`TransportError` when the server cannot be reached in
        ``connect_timeout`` and :class:`AuthenticationError` when it refuses the token.
        """
        self._check_open()
        with self._lock:
            if self._started:
                return self
            link, leftover = self._open()
            with link.lock:
                for sub in list(self._subs.values()):
                    link.append(self._sub_frame(sub))
            self._link = link
            self._register(link)
            self._started = True
            self._start_threads(f"eventforge-tcp-client:{self.host}:{self.port}")
            if link.frames:
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
        next(self._sent)
        frame = _pack(len(body)) + body
        if self._fanout_subs:
            local = self._index.match(message.topic)
            if local:
                self._deliver_local(local, self.codec.decode(body))
        link = self._link
        if link is not None and self._fatal is None:
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
        if not self._started:
            self._check_open()
            raise TransportError(f"{self!r} is not connected: call connect() before sending")
        link = self._link
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
        waiter = _Ack()
        self._acks[marker] = waiter
        try:
            self._push(control_frame(COUNT, None, frame_id=marker) + frame, hold=False)
            if local:
                self._deliver_local(local, self.codec.decode(frame[4:]))
            limit = self.count_timeout
            deadline = deadline_of(message) if message.reply_to is not None else None
            if deadline is not None:
                limit = min(limit, max(0.0, deadline - time.time()))
            answered = waiter.event.wait(limit)
        finally:
            self._acks.pop(marker, None)
        payload = waiter.payload
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
        if not self._started:
            self._check_open()
            raise TransportError(f"{self!r} is not connected: call connect() before sending")
        local = self._index.match(message.topic) if self._fanout_subs else ()
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
        sub = _Sub(sid, topic, group, callback)
        with self._lock:
            self._subs[sid] = sub
            if group is None:
                sub.key = self._index.add(topic, sub)
                self._fanout_subs += 1
        frame_id = new_id()
        ack = _Ack()
        self._acks[frame_id] = ack
        try:
            sent = self._send_control(self._sub_frame(sub, frame_id))
            if sent and not ack.event.wait(self.subscribe_timeout):
                log.warning(
                    "%s did not confirm subscription %r within %.1fs; it stays registered "
                    "and is announced again after a reconnect",
                    self.url,
                    topic,
                    self.subscribe_timeout,
                )
        finally:
            self._acks.pop(frame_id, None)
        payload = ack.payload
        if isinstance(payload, dict) and payload.get("ok") is False:
            self._forget(sid)
            raise ValueError(f"server refused subscription {topic!r}: {payload.get('error')}")
        return sid

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; return whether it existed."""
        if not self._forget(subscription_id):
            return False
        if not self._closed:
            self._send_control(control_frame(UNSUB, {"sid": subscription_id}))
        return True

    def close(self) -> None:
        """Flush what is queued, close the link and stop the threads. Idempotent."""
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        self._shutdown()
        with self._state:
            self._held.clear()
            self._held_size = 0
            self._state.notify_all()
        self._nobody.clear()
        for ack in list(self._acks.values()):
            ack.event.set()

    def stats(self) -> dict[str, Any]:
        """Counters of the base transport plus reconnects and frames held while offline."""
        out = super().stats()
        out["connected"] = self.connected
        out["auth_failed"] = isinstance(self._fatal, AuthenticationError)
        out["held_frames"] = len(self._held)
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

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Any:
        """Build from ``tcp://[:token@]host:port[?listen=1]``; see :func:`eventforge_tcp.transport.from_url`."""
        from .transport import from_url

        return from_url(url, **options)

    # -- internals: subscriptions ------------------------------------------------------------

    def _deliver_local(self, subs: tuple[_Sub, ...], message: Message) -> None:
        """Deliver a message published here to this client's own matching subscriptions."""
        batch: list[tuple[Callback, Message]] = []
        for sub in subs:
            if sub.inline:
                self._run_inline(sub.callback, message)
            else:
                batch.append((sub.callback, message))
        self._deliver(batch)

    @staticmethod
    def _sub_frame(sub: _Sub, frame_id: str | None = None) -> bytes:
        return control_frame(
            SUB, {"sid": sub.sid, "pattern": sub.pattern, "group": sub.group}, frame_id=frame_id
        )

    def _forget(self, sid: str) -> bool:
        with self._lock:
            sub = self._subs.pop(sid, None)
            if sub is None:
                return False
            if sub.group is None:
                self._index.remove(sub.key)
                self._fanout_subs -= 1
            return True

    def _send_control(self, frame: bytes) -> bool:
        """Queue a control frame if the link is up; return whether it was queued."""
        link = self._link
        if link is None or link.state != LinkState.OPEN:
            return False
        with link.lock:
            if link.state == LinkState.CLOSED:
                return False
            link.append(frame)
        self._mark_dirty(link)
        return True

    # -- internals: publishing ---------------------------------------------------------------

    def _push(self, frame: bytes, *, hold: bool = True) -> None:
        """Queue ``frame`` on the link; while disconnected hold it (``hold``) or raise."""
        deadline = time.monotonic() + self.send_timeout
        size = len(frame)
        if not self._started:
            self._check_open()
            raise TransportError(f"{self!r} is not connected: call connect() before sending")
        while True:
            if self._fatal is not None:
                raise self._fatal
            self._check_open()
            link = self._link
            if link is not None and link.state == LinkState.OPEN:
                queued = wake = False
                with link.lock:
                    if link.state == LinkState.OPEN:
                        if link.out_size + size <= self.max_send_buffer:
                            queued = True
                            wake = link.offer(frame)
                        else:
                            # The server is not reading fast enough: wait for room, except
                            # on the I/O thread, the one that makes room: there the message is
                            # dropped and counted, as the server does toward a slow client.
                            if self._on_io_thread():
                                self._slow_peer_drop(link)
                                return
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                raise self._full_error()
                            link.cond.wait(min(remaining, 0.1))
                if queued:
                    if wake:
                        self._mark_dirty(link)
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
            with self._state:
                if self._link is None or self._link.state != LinkState.OPEN:
                    if self._held_size + size <= self.max_send_buffer:
                        self._held.append(frame)
                        self._held_size += size
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TransportError(
                            f"not connected to {self.url} and the offline buffer "
                            f"({self.max_send_buffer} bytes) is full after waiting "
                            f"{self.send_timeout:.1f}s; the message was not sent"
                        )
                    self._state.wait(min(remaining, 0.1))

    def _full_error(self) -> TransportError:
        return TransportError(
            f"send buffer to {self.url} stayed full ({self.max_send_buffer} bytes) for "
            f"{self.send_timeout:.1f}s: the server is not reading; the message was not sent"
        )

    # -- internals: the link -------------------------------------------------------------------

    def _open(self) -> tuple[Link, list[bytes]]:
        """Connect, handshake and say hello (blocking, bounded by ``connect_timeout``)."""
        url = self.url
        deadline = time.monotonic() + self.connect_timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise TransportError(
                f"cannot connect to {url}: {exc.strerror or exc}. Is a TCPServerTransport "
                "listening there?"
            ) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host
                )
            hello: dict[str, Any] = {"hello": PROTOCOL, "protocol": PROTOCOL_VERSION}
            if self._token is not None:
                hello["token"] = self._token
            if self.client_name:
                hello["name"] = self.client_name
            sock.sendall(encode_json_frame(hello))
            decoder = FrameDecoder(self.max_frame_size)
            bodies: list[bytes] = []
            while not bodies:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(
                        f"{url} did not answer the hello in {self.connect_timeout}s"
                    )
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    raise TransportError(
                        f"{url} closed the connection during the hello; is it an eventforge "
                        "TCP server, and do both ends agree on TLS?"
                    )
                bodies = decoder.feed(data)
            welcome = parse_welcome(bodies[0])
            if "error" in welcome:
                code, detail = welcome["error"], str(welcome.get("message", ""))[:300]
                if code == "auth":
                    raise AuthenticationError(url, detail)
                raise TransportError(f"{url} refused the connection ({code}): {detail}")
            server_limit = welcome.get("max_frame_size")
            if type(server_limit) is int and 256 <= server_limit < self.codec.max_size:
                # Refuse at the sender what the server would refuse by closing the link.
                self.codec.max_size = server_limit
            features = welcome.get("features")
            sock.setblocking(False)
        except ssl.SSLError as exc:
            sock.close()
            raise TransportError(f"TLS handshake with {url} failed: {exc.reason or exc}") from None
        except TimeoutError:
            sock.close()
            raise TransportError(
                f"{url} did not complete the hello in {self.connect_timeout}s"
            ) from None
        except ProtocolError as exc:
            sock.close()
            raise TransportError(
                f"{url} answered the hello with something unexpected: {exc}"
            ) from None
        except OSError as exc:
            sock.close()
            raise TransportError(f"connection to {url} failed during the hello: {exc}") from None
        except TransportError:
            sock.close()
            raise
        link = Link(sock, url, self.max_frame_size, decoder)
        link.state = LinkState.OPEN
        if isinstance(features, list):
            link.features = frozenset(f for f in features if isinstance(f, str))
        return link, bodies[1:]

    def _on_tick(self, now: float) -> None:
        if self._link is not None or self._closed or not self.reconnect or self._fatal:
            return
        if now < self._next_attempt:
            return
        try:
            link, _ = self._open()
        except AuthenticationError as exc:
            self._fatal = exc
            log.error("%s; giving up on reconnecting", exc)
            with self._state:
                self._state.notify_all()
            return
        except TransportError as exc:
            self._attempts += 1
            self._count("connect_failures")
            delay = min(
                self.reconnect_max_delay, self.reconnect_delay * 2 ** min(self._attempts, 16)
            )
            self._next_attempt = time.monotonic() + delay * random.uniform(0.5, 1.0)
            log.log(
                logging.WARNING if self._attempts == 1 else logging.DEBUG,
                "reconnect to %s failed (attempt %d): %s",
                self.url,
                self._attempts,
                exc,
            )
            return
        if self._is_closed():
            link.close_socket()
            return
        with self._lock:
            subs = list(self._subs.values())
        frames = [self._sub_frame(sub) for sub in subs]
        # Held frames go onto the new link before it is published to senders, under the lock
        # that offline senders hold, so none is left behind and the order is kept.
        with self._state:
            held, self._held, self._held_size = self._held, [], 0
            held, abandoned = drop_abandoned_requests(held, self.codec.decode)
            with link.lock:
                for frame in frames:
                    link.append(frame)
                for frame in held:
                    link.append(frame)
            self._link = link
            self._state.notify_all()
        self._attempts = 0
        self._count("reconnects")
        if abandoned:
            self._count("held_requests_dropped", abandoned)
        self._register(link)
        self._flush(link)
        down = time.monotonic() - self._disconnected_at if self._disconnected_at else 0.0
        log.warning(
            "reconnected to %s after %.2fs; restored %d subscriptions, sent %d held messages, "
            "dropped %d held requests whose callers stopped waiting",
            self.url,
            down,
            len(subs),
            len(held),
            abandoned,
        )

    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        if link is not self._link:
            return
        self._disconnected_at = time.monotonic()
        unsent, cut = link.take_unsent()
        if cut:
            self._count("frames_lost_on_disconnect", cut)
        with self._state:
            self._link = None
            self._held[:0] = unsent
            self._held_size += sum(len(f) for f in unsent)
            self._state.notify_all()
        self._nobody.clear()  # an answer can no longer come
        for ack in list(self._acks.values()):
            ack.event.set()
        if self._closed:
            return
        self._next_attempt = time.monotonic() + self.reconnect_delay * random.uniform(0.5, 1.0)
        if self.reconnect:
            log.warning("lost connection to %s (%s); reconnecting", self.url, reason)
        else:
            log.warning("lost connection to %s (%s); reconnect=False", self.url, reason)

    def _on_frames(self, link: Link, bodies: list[bytes], dirty: set[Link]) -> None:
        decode = self.codec.decode
        run_inline = self._run_inline
        batch: list[tuple[Callback, Message]] = []
        received = 0
        for body in bodies:
            message = decode(body)
            topic = message.topic
            if topic.startswith(CONTROL_PREFIX):
                if link.route is not None:
                    raise ProtocolError("a route frame must be followed by a message frame")
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
                    ack = self._acks.get(key)
                    if ack is not None:
                        ack.payload = message.payload
                        ack.event.set()
                    elif self._nobody:
                        self._nobody.heard(key, message.payload)
                elif not self._handle_common_control(link, message, dirty):
                    raise ProtocolError(f"unknown control frame {topic!r}")
                if link.state == LinkState.CLOSED:
                    return
                continue
            received += 1
            route = link.route
            targets: tuple[_Sub, ...] | list[_Sub]
            if route is None:
                targets = self._index.match(topic)
            else:
                link.route = None
                targets = []
                if route.get("fanout", True):  # type: ignore[attr-defined]
                    targets.extend(self._index.match(topic))
                subs = self._subs
                for sid in route["sids"]:  # type: ignore[index]
                    target = subs.get(sid) if isinstance(sid, str) else None
                    if target is not None:
                        targets.append(target)
            for sub in targets:
                if sub.inline:
                    run_inline(sub.callback, message)
                else:
                    batch.append((sub.callback, message))
        if received:
            self._count("received", received)
        self._deliver(batch)
