"""TCPServerTransport: the hub of a broker-less pub/sub space.

The server listens; clients connect, say hello, and announce their subscriptions. A message
published on the server or on any client reaches every matching subscription on the server and
on every client; for a group subscription the server picks one member across all connections.
The server forwards the sender's frame bytes unchanged after validating them, so routing costs a
decode, not a re-encode.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, ProtocolError, TransportError
from eventforge.message import Message
from eventforge.topics import TopicIndex, validate_pattern
from eventforge.transport import Callback

from ._accept import Acceptor, refuse_raw
from ._base import Delivery, TCPTransportBase
from ._control import (
    ACK,
    COUNT,
    COUNTED,
    FEATURE_COUNT,
    ROUTE,
    SUB,
    UNSUB,
    control_frame,
    decode_control_payload,
)
from ._link import Link, LinkState
from ._liveness import DEFAULT_FRAME_TIMEOUT
from ._targets import Group as _Group
from ._targets import Key as _Key
from ._targets import Local as _Local
from ._targets import Remote as _Remote
from ._targets import Target as _Target
from .framing import (
    CONTROL_PREFIX,
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    PROTOCOL,
    PROTOCOL_VERSION,
    encode_json_frame,
    parse_hello,
)

__all__ = ["TCPServerTransport"]

log = logging.getLogger("eventforge.transports.tcp")
_pack = HEADER.pack
_MAX_REFUSING = 16  # TLS handshakes at once whose only purpose is to say "busy"


class TCPServerTransport(TCPTransportBase):
    """Listen on ``host:port`` and serve a pub/sub space to :class:`TCPClientTransport` peers.

    Call :meth:`start` before use (port ``0`` picks a free one; :attr:`port` then tells which).
    ``token`` requires every client to present the same secret in its hello (compared in
    constant time); ``ssl_context`` (a server-side :class:`ssl.SSLContext`, optionally with
    ``verify_mode=CERT_REQUIRED`` for mutual TLS) encrypts every connection. Limits:
    ``max_connections``, ``hello_timeout`` (seconds to complete TLS and the hello),
    ``max_frame_size`` (per frame, both directions), ``max_send_buffer`` bytes queued per
    client (a client whose buffer is full misses messages, counted in ``dropped_slow_peer``,
    and is disconnected after ``write_deadline`` seconds without reading), heartbeats every
    ``heartbeat_interval`` seconds of silence with a ``heartbeat_timeout`` for dead peers,
    and ``frame_timeout`` seconds for a frame to arrive whole (``frame_timeouts``).
    """

    name: ClassVar[str] = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9090,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        hello_timeout: float = 3.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_send_buffer: int = 8 * 1024 * 1024,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float | None = None,
        write_deadline: float = 10.0,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_pending: int = 10_000,
        serializer: str | None = None,
        trusted: bool = False,
        backlog: int = 128,
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
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int in 0..65535, got {port!r}", key="port")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(
                f"max_connections must be a positive int, got {max_connections!r}",
                key="max_connections",
            )
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.hello_timeout = float(hello_timeout)
        self.backlog = backlog
        self._acceptor: Acceptor | None = None
        self._refusing = 0  # TLS links let through the handshake only to be refused "busy"
        self._started = False
        self._lock = threading.RLock()
        self._index: TopicIndex[_Target] = TopicIndex()
        self._entries: dict[_Key, tuple[int, _Group | None, _Local | _Remote]] = {}
        self._groups: dict[tuple[str, str], tuple[int, _Group]] = {}
        self._link_sids: dict[int, set[str]] = {}
        for key in (
            "connections_accepted",
            "connections_refused",
            "auth_failures",
            "hello_timeouts",
            "accept_failures",
        ):
            self._counts[key] = 0

    @property
    def url(self) -> str:
        """``tcp://host:port`` (``tcps://`` with TLS) of the bound socket."""
        scheme = "tcps" if self.ssl_context is not None else "tcp"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> TCPServerTransport:
        """Bind, listen and start the I/O and delivery threads; return ``self``. Idempotent."""
        self._check_open()
        with self._lock:
            if self._started:
                return self
            try:
                listener = socket.create_server(
                    (self.host, self.port), backlog=self.backlog, reuse_port=False
                )
            except OSError as exc:
                raise TransportError(
                    f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}. Choose "
                    "another port (0 picks a free one) or stop what is using it"
                ) from None
            listener.setblocking(False)
            self.port = int(listener.getsockname()[1])
            self._acceptor = Acceptor(
                listener, self._sel, tls=self.ssl_context is not None, count=self._count
            )
            self._started = True
            self._start_threads(f"eventforge-tcp-server:{self.port}")
        log.info("eventforge TCP server listening on %s", self.url)
        return self

    # -- the contract ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Deliver ``message`` to matching subscriptions here and on every client."""
        body = self._encode_body(message)
        if not self._started:
            raise TransportError(f"{self!r} is not started: call start() before sending")
        self._route(message, body, None, None)

    def send_counted(self, message: Message) -> int:
        """Like :meth:`send`, returning how many receivers took ``message``.

        The count is the local subscriptions called, plus the client connections the message
        was forwarded to for their plain subscriptions, plus the group members picked (here
        or on a client). A connection whose send buffer is full misses the message (counted
        in ``dropped_slow_peer``) and is not counted. A queue with an unroutable policy uses
        this to learn that nobody took a message.
        """
        body = self._encode_body(message)
        if not self._started:
            raise TransportError(f"{self!r} is not started: call start() before sending")
        return self._route(message, body, None, None)

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Call ``callback`` for every message matching ``topic``.

        Callbacks run on the delivery thread; those marked
        :func:`~eventforge.transport.nonblocking` run at once on the thread that routes the
        message (the I/O thread, or the publisher's for a message sent here).
        """
        self._check_open()
        self._check_subscription(topic, callback, group)
        sid = f"local-{next(self._ids)}"
        self._add((0, sid), topic, group, _Local(sid, callback))
        return sid

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a local subscription; return whether it existed."""
        return self._remove((0, subscription_id))

    def close(self) -> None:
        """Stop listening, close every connection and stop the threads. Idempotent."""
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        self._shutdown()
        if self._acceptor is not None:
            self._acceptor.close()
        with self._lock:
            self._index = TopicIndex()
            self._entries.clear()
            self._groups.clear()

    def stats(self) -> dict[str, Any]:
        """Counters of the base transport plus accepted/refused connections and auth failures."""
        out = super().stats()
        out["subscriptions"] = len(self._entries)
        return out

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("listening" if self._started else "not started")
        auth = ", token=***" if self._token else ""
        return f"TCPServerTransport({self.url}, {state}, {len(self._links)} clients{auth})"

    # -- subscription index ------------------------------------------------------------------

    def _add(self, key: _Key, pattern: str, group: str | None, target: _Local | _Remote) -> None:
        with self._lock:
            if key in self._entries:
                self._remove(key)
            if group is None:
                self._entries[key] = (self._index.add(pattern, target), None, target)
                return
            entry = self._groups.get((pattern, group))
            if entry is None:
                grp = _Group()
                entry = self._groups[(pattern, group)] = (self._index.add(pattern, grp), grp)
            index_key, grp = entry
            grp.members = [*grp.members, target]
            self._entries[key] = (index_key, grp, target)

    def _remove(self, key: _Key) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            index_key, grp, target = entry
            if grp is None:
                return self._index.remove(index_key)
            grp.members = [m for m in grp.members if m is not target]
            if not grp.members:
                self._index.remove(index_key)
                for gkey, (k, _) in list(self._groups.items()):
                    if k == index_key:
                        del self._groups[gkey]
            return True

    # -- routing -----------------------------------------------------------------------------

    def _route(
        self,
        message: Message,
        body: bytes,
        origin: Link | None,
        dirty: set[Link] | None,
        local_batch: list[Delivery] | None = None,
        targets: tuple[_Target, ...] | None = None,
    ) -> int:
        """Deliver locally and forward ``body`` (framed) to every link with a matching subscription.

        From the I/O thread (``dirty`` given) frames are queued for the end-of-pass flush and
        local deliveries collected in ``local_batch``; from a publishing thread they go out at
        once. ``targets`` are the topic's matches when the caller looked them up already.
        Returns how many receivers took the message (see :meth:`send_counted`).
        """
        if targets is None:
            targets = self._index.match(message.topic)
        if not targets:
            return 0
        if local_batch is not None and len(targets) == 1 and targets[0].__class__ is _Local:
            # The common case of a received message: one subscription of this process.
            only: _Local = targets[0]
            if only.inline:
                self._run_inline(only.callback, message)
            else:
                local_batch.append((only.callback, message))
            return 1
        local: list[_Local] | None = None
        fanout: list[Link] | None = None
        groups: dict[Link, list[str]] | None = None
        for target in targets:
            cls = target.__class__
            if cls is _Remote:
                link = target.link  # type: ignore[union-attr]
                if link is not origin:
                    if fanout is None:
                        fanout = [link]
                    elif link not in fanout:
                        fanout.append(link)
            elif cls is _Local:
                if local is None:
                    local = []
                local.append(target)  # type: ignore[arg-type]
            else:
                with self._lock:
                    member = target.pick()  # type: ignore[union-attr]
                if member is None:
                    continue
                if member.__class__ is _Local:
                    if local is None:
                        local = []
                    local.append(member)
                else:
                    if groups is None:
                        groups = {}
                    groups.setdefault(member.link, []).append(member.sid)  # type: ignore[union-attr]
        taken = 0
        if local:
            taken = len(local)
            copy = message if origin is not None else self.codec.decode(body)
            batch = local_batch if local_batch is not None else []
            for sub in local:
                if sub.inline:
                    # A hand-off (reply waiter, handler thread): run it here, in order.
                    self._run_inline(sub.callback, copy)
                else:
                    batch.append((sub.callback, copy))
            if local_batch is None:
                self._deliver(batch)
        if fanout is None and groups is None:
            return taken
        frame = _pack(len(body)) + body
        destinations = list(fanout or ())
        if groups:
            destinations.extend(link for link in groups if link not in destinations)
        plain = len(fanout) if fanout is not None else 0
        for i, link in enumerate(destinations):
            sids = groups.get(link) if groups else None
            fan = i < plain  # the fan-out links come first in destinations
            out = control_frame(ROUTE, {"sids": sids, "fanout": fan}) + frame if sids else frame
            if dirty is None:
                queued = self._queue_frame(link, out)
            else:
                queued = self._io_append(link, out, dirty)
            if queued:
                taken += int(fan) + (len(sids) if sids else 0)
        return taken

    # -- I/O thread hooks --------------------------------------------------------------------

    def _on_listener_ready(self, data: object) -> None:
        if self._acceptor is None:
            return
        for sock, peer in self._acceptor.ready():
            refusal = None
            if len(self._links) - self._refusing >= self.max_connections:
                self._count("connections_refused")
                log.warning(
                    "refused connection from %s: %d connections already open (max_connections)",
                    peer,
                    len(self._links) - self._refusing,
                )
                refusal = "server has reached max_connections; retry later"
                if self.ssl_context is None:
                    refuse_raw(sock, "busy", refusal)
                    continue
                if self._refusing >= _MAX_REFUSING:
                    sock.close()
                    continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = LinkState.HELLO
            if self.ssl_context is not None:
                # Over TLS a refusal must wait for the handshake: raw bytes would reach the
                # client as a TLS error (WRONG_VERSION_NUMBER) instead of "busy".
                try:
                    sock = self.ssl_context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError) as exc:
                    log.warning("TLS setup for %s failed: %s", peer, exc)
                    sock.close()
                    continue
                state = LinkState.TLS_HANDSHAKE
            link = Link(sock, peer, self.max_frame_size)
            link.state = state
            link.hello_deadline = time.monotonic() + self.hello_timeout
            link.refusal = refusal
            if refusal is None:
                self._count("connections_accepted")
            else:
                self._refusing += 1
            self._register(link)

    def _on_tick(self, now: float) -> None:
        if self._acceptor is not None:
            self._acceptor.tick(now)

    def _on_frames(self, link: Link, bodies: list[bytes], dirty: set[Link]) -> None:
        start = 0
        if link.state == LinkState.HELLO:
            if not self._accept_hello(link, bodies[0], dirty):
                return
            start = 1
        decode = self.codec.decode
        route = self._route
        match = self._index.match
        append = None
        received = 0
        batch: list[Delivery] = []
        closed = LinkState.CLOSED
        try:
            for i in range(start, len(bodies)):
                if link.state == closed:
                    return
                body = bodies[i]
                message = decode(body)
                topic = message.topic
                if topic.startswith(CONTROL_PREFIX):
                    if link.counting is not None:
                        raise ProtocolError("a $tcp.count frame must be followed by a message")
                    self._on_control(link, message, dirty)
                    continue
                received += 1
                targets = match(topic)
                if link.counting is None and len(targets) == 1 and targets[0].__class__ is _Local:
                    # The common case inline: one plain subscription of this process.
                    only: _Local = targets[0]
                    if only.inline:
                        self._run_inline(only.callback, message)
                    else:
                        if append is None:
                            append = batch.append
                        append((only.callback, message))
                    continue
                taken = route(message, body, link, dirty, batch, targets)
                counting = link.counting
                if counting is not None:
                    link.counting = None
                    if taken and link.count_only_zero:
                        continue  # the sender only wants to hear of "nobody"
                    self._io_append(
                        link,
                        control_frame(COUNTED, {"count": taken}, counting),
                        dirty,
                        control=True,
                    )
        finally:
            self._deliver(batch)
            if received:
                self._count("received", received)

    def _accept_hello(self, link: Link, body: bytes, dirty: set[Link]) -> bool:
        if link.refusal is not None:
            self._refuse(link, "busy", link.refusal, dirty)
            return False
        try:
            hello = parse_hello(body)
        except ProtocolError as exc:
            self._refuse(link, "protocol", str(exc), dirty)
            return False
        if self._token is not None:
            given = hello.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(
                given.encode("utf-8"), self._token.encode("utf-8")
            ):
                self._count("auth_failures")
                self._refuse(
                    link,
                    "auth",
                    "authorization violation: the token in the hello is missing or wrong",
                    dirty,
                )
                return False
        name = hello.get("name")
        if isinstance(name, str) and name:
            link.name = f"{name[:64]}@{link.peer}"
        link.state = LinkState.OPEN
        self._link_sids[link.id] = set()
        self._io_append(
            link,
            encode_json_frame(
                {
                    "welcome": PROTOCOL,
                    "protocol": PROTOCOL_VERSION,
                    "max_frame_size": self.max_frame_size,
                    "heartbeat_interval": self.heartbeat_interval,
                    "features": [FEATURE_COUNT],
                }
            ),
            dirty,
            control=True,
        )
        log.info("client %s connected", link.name)
        return True

    def _refuse(self, link: Link, code: str, message: str, dirty: set[Link]) -> None:
        with link.lock:
            link.frames = [encode_json_frame({"error": code, "message": message})]
            link.partial = None
            link.out_size = len(link.frames[0])
            try:
                link.write()
            except OSError:
                pass
        dirty.discard(link)
        self._drop_link(link, "auth" if code == "auth" else "protocol", f"refused: {message}")

    def _on_control(self, link: Link, message: Message, dirty: set[Link]) -> None:
        topic = message.topic
        if topic == SUB:
            payload = decode_control_payload(message, "sid", "pattern")
            sid, pattern, group = payload["sid"], payload["pattern"], payload.get("group")
            if not isinstance(sid, str) or not sid or not (group is None or isinstance(group, str)):
                raise ProtocolError("$tcp.sub needs a string 'sid' and a string or null 'group'")
            try:
                validate_pattern(pattern)
            except (TypeError, ValueError) as exc:
                self._io_append(
                    link,
                    control_frame(ACK, {"ok": False, "error": str(exc)}, message.id),
                    dirty,
                    control=True,
                )
                return
            self._add((link.id, sid), pattern, group or None, _Remote(link, sid))
            self._link_sids.setdefault(link.id, set()).add(sid)
            self._io_append(link, control_frame(ACK, {"ok": True}, message.id), dirty, control=True)
        elif topic == COUNT:
            link.counting = message.id
            payload = message.payload
            link.count_only_zero = isinstance(payload, dict) and payload.get("only_zero") is True
        elif topic == UNSUB:
            payload = decode_control_payload(message, "sid")
            sid = payload["sid"]
            if isinstance(sid, str):
                self._remove((link.id, sid))
                self._link_sids.get(link.id, set()).discard(sid)
        elif not self._handle_common_control(link, message, dirty):
            raise ProtocolError(f"unknown control frame {topic!r}")

    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        if link.refusal is not None:
            self._refusing -= 1
        unsent, cut = link.take_unsent()
        if unsent or cut:
            self._count("frames_lost_on_disconnect", len(unsent) + cut)
        for sid in self._link_sids.pop(link.id, ()):
            self._remove((link.id, sid))
