"""TCPServerTransport: the hub of a broker-less pub/sub space.

The server listens; clients connect, say hello, and announce their subscriptions. A message
published on the server or on any client reaches every matching subscription on the server and
on every client; for a group subscription the server picks one member across all connections.
The server forwards the sender's frame bytes unchanged after validating them, so routing costs a
decode, not a re-encode.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any, ClassVar

from eventforge.errors import ProtocolError, TransportError
from eventforge.message import Message
from eventforge.topics import validate_pattern
from eventforge.transport import Callback

from ._accept import Acceptor, refuse_raw
from ._base import Handoff, TCPTransportBase
from ._control import ACK, COUNT, COUNTED, SUB, UNSUB, control_frame, decode_control_payload
from ._hello import Refusal, check_hello, welcome_frame
from ._link import Link, LinkState
from ._options import SERVER_OPTIONS, check_port
from ._routing import Router
from ._targets import Local
from .framing import CONTROL_PREFIX, encode_json_frame

__all__ = ["TCPServerTransport"]

log = logging.getLogger("eventforge.transports.tcp")
_MAX_REFUSING = 16  # TLS handshakes at once whose only purpose is to say "busy"
_SERVER_COUNTERS = (
    "connections_accepted",
    "connections_refused",
    "auth_failures",
    "accept_failures",
)


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

    def __init__(self, host: str = "127.0.0.1", port: int = 9090, **options: Any) -> None:
        values = SERVER_OPTIONS.read(keywords=options)
        super().__init__(values, _SERVER_COUNTERS)
        self.host = host
        self.port = check_port(port, allow_zero=True)
        self.max_connections: int = values["max_connections"]
        self.hello_timeout: float = values["hello_timeout"]
        self.backlog: int = values["backlog"]
        self._acceptor: Acceptor | None = None
        self._refusing = 0  # TLS links let through the handshake only to be refused "busy"
        self._started = False
        self._lifecycle = threading.Lock()
        self._router = Router(
            run_inline=self._run_inline,
            deliver=self._deliver,
            queue_frame=self._io.queue_frame,
            io_append=self._io.io_append,
            decode=self.codec.decode,
        )

    @property
    def url(self) -> str:
        """``tcp://host:port`` (``tcps://`` with TLS) of the bound socket."""
        scheme = "tcps" if self.ssl_context is not None else "tcp"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> TCPServerTransport:
        """Bind, listen and start the I/O and delivery threads; return ``self``. Idempotent."""
        self._check_open()
        with self._lifecycle:
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
                listener,
                self._io.selector,
                tls=self.ssl_context is not None,
                count=self._counts.bump,
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
        self._router.route(message, body, None, None)

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
        return self._router.route(message, body, None, None)

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Call ``callback`` for every message matching ``topic``.

        Callbacks run on the delivery thread; those marked
        :func:`~eventforge.transport.nonblocking` run at once on the thread that routes the
        message (the I/O thread, or the publisher's for a message sent here).
        """
        self._check_open()
        self._check_subscription(topic, callback, group)
        sid = f"local-{next(self._ids)}"
        self._router.add((0, sid), topic, group, Local(sid, callback))
        return sid

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a local subscription; return whether it existed."""
        return self._router.remove((0, subscription_id))

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
        self._router.clear()

    def stats(self) -> dict[str, Any]:
        """Counters of the base transport plus accepted/refused connections and auth failures."""
        out = super().stats()
        out["subscriptions"] = len(self._router)
        return out

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("listening" if self._started else "not started")
        auth = ", token=***" if self._token else ""
        return f"TCPServerTransport({self.url}, {state}, {len(self._io.links)} clients{auth})"

    # -- I/O thread hooks --------------------------------------------------------------------

    def _on_listener_ready(self, data: object) -> None:
        if self._acceptor is None:
            return
        links = self._io.links
        for sock, peer in self._acceptor.ready():
            refusal = None
            if len(links) - self._refusing >= self.max_connections:
                self._counts.bump("connections_refused")
                log.warning(
                    "refused connection from %s: %d connections already open (max_connections)",
                    peer,
                    len(links) - self._refusing,
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
                self._counts.bump("connections_accepted")
            else:
                self._refusing += 1
            self._io.register(link)

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
        router = self._router
        route = router.route
        match = router.index.match
        received = 0
        append = None
        batch: list[Handoff] = []
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
                if link.counting is None and len(targets) == 1 and targets[0].__class__ is Local:
                    # The common case inline: one plain subscription of this process.
                    only: Local = targets[0]
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
                    self._io.io_append(
                        link,
                        control_frame(COUNTED, {"count": taken}, counting),
                        dirty,
                        control=True,
                    )
        finally:
            self._deliver(batch)
            if received:
                self._counts.bump("received", received)

    def _accept_hello(self, link: Link, body: bytes, dirty: set[Link]) -> bool:
        try:
            if link.refusal is not None:
                raise Refusal("busy", link.refusal)
            name = check_hello(body, self._token)
        except Refusal as refusal:
            if refusal.code == "auth":
                self._counts.bump("auth_failures")
            self._refuse(link, refusal.code, refusal.reason, dirty)
            return False
        if name is not None:
            link.name = f"{name[:64]}@{link.peer}"
        link.state = LinkState.OPEN
        self._router.link_opened(link)
        self._io.io_append(
            link, welcome_frame(self.max_frame_size, self.heartbeat_interval), dirty, control=True
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
        self._io.drop_link(link, "auth" if code == "auth" else "protocol", f"refused: {message}")

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
                self._io.io_append(
                    link,
                    control_frame(ACK, {"ok": False, "error": str(exc)}, message.id),
                    dirty,
                    control=True,
                )
                return
            self._router.add_remote(link, sid, pattern, group or None)
            self._io.io_append(
                link, control_frame(ACK, {"ok": True}, message.id), dirty, control=True
            )
        elif topic == COUNT:
            link.counting = message.id
            payload = message.payload
            link.count_only_zero = isinstance(payload, dict) and payload.get("only_zero") is True
        elif topic == UNSUB:
            payload = decode_control_payload(message, "sid")
            sid = payload["sid"]
            if isinstance(sid, str):
                self._router.remove_remote(link, sid)
        elif not self._io.common_control(link, message, dirty):
            raise ProtocolError(f"unknown control frame {topic!r}")

    def _on_link_closed(self, link: Link, cause: str, reason: str) -> None:
        if link.refusal is not None:
            self._refusing -= 1
        unsent, cut = link.take_unsent()
        if unsent or cut:
            self._counts.bump("frames_lost_on_disconnect", len(unsent) + cut)
        self._router.link_closed(link)
