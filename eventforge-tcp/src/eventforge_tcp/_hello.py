"""The hello exchange that opens every link: the client's side and the server's checks.

The client connects (TCP, then TLS when configured), sends ``{"hello", "protocol", "token",
"name"}`` and reads the welcome (``max_frame_size``, ``heartbeat_interval``, ``features``) or
a refusal (``{"error": code, "message": ...}``; code ``auth`` is final). The server checks the
hello's protocol and token (compared in constant time) and answers with the welcome. See
``docs/wire-protocol.md``.
"""

from __future__ import annotations

import hmac
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from eventforge.errors import ProtocolError, TransportError
from eventforge.wire import WireCodec

from ._control import FEATURE_COUNT
from ._link import Link, LinkState
from .errors import AuthenticationError
from .framing import (
    PROTOCOL,
    PROTOCOL_VERSION,
    FrameDecoder,
    encode_json_frame,
    parse_hello,
    parse_welcome,
)

__all__ = ["ClientHello", "Refusal", "check_hello", "open_link", "welcome_frame"]


@dataclass(frozen=True)
class ClientHello:
    """Where a client connects and what it says in its hello."""

    host: str
    port: int
    url: str
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    token: str | None
    client_name: str | None
    connect_timeout: float
    max_frame_size: int


def open_link(hello: ClientHello, codec: WireCodec) -> tuple[Link, list[bytes]]:
    """Connect, handshake and say hello (blocking, bounded by ``connect_timeout``).

    Returns the open link and any frames that followed the welcome. A server that accepts
    smaller frames than ``codec`` would send lowers ``codec.max_size`` to its limit, so that a
    message too large for it is refused here instead of closing the link there.
    """
    url = hello.url
    timeout = hello.connect_timeout
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((hello.host, hello.port), timeout=timeout)
    except OSError as exc:
        raise TransportError(
            f"cannot connect to {url}: {exc.strerror or exc}. Is a TCPServerTransport "
            "listening there?"
        ) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hello.ssl_context is not None:
            sock = hello.ssl_context.wrap_socket(
                sock, server_hostname=hello.server_hostname or hello.host
            )
        greeting: dict[str, Any] = {"hello": PROTOCOL, "protocol": PROTOCOL_VERSION}
        if hello.token is not None:
            greeting["token"] = hello.token
        if hello.client_name:
            greeting["name"] = hello.client_name
        sock.sendall(encode_json_frame(greeting))
        decoder = FrameDecoder(hello.max_frame_size)
        bodies: list[bytes] = []
        while not bodies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(f"{url} did not answer the hello in {timeout}s")
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
        if type(server_limit) is int and 256 <= server_limit < codec.max_size:
            codec.max_size = server_limit
        features = welcome.get("features")
        sock.setblocking(False)
    except ssl.SSLError as exc:
        sock.close()
        raise TransportError(f"TLS handshake with {url} failed: {exc.reason or exc}") from None
    except TimeoutError:
        sock.close()
        raise TransportError(f"{url} did not complete the hello in {timeout}s") from None
    except ProtocolError as exc:
        sock.close()
        raise TransportError(f"{url} answered the hello with something unexpected: {exc}") from None
    except OSError as exc:
        sock.close()
        raise TransportError(f"connection to {url} failed during the hello: {exc}") from None
    except TransportError:
        sock.close()
        raise
    link = Link(sock, url, hello.max_frame_size, decoder)
    link.state = LinkState.OPEN
    if isinstance(features, list):
        link.features = frozenset(f for f in features if isinstance(f, str))
    return link, bodies[1:]


class Refusal(Exception):
    """Why the server turns a hello down: ``code`` (``protocol``, ``auth``) and a reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_hello(body: bytes, token: str | None) -> str | None:
    """Check a client's hello; return the name it gave (or ``None``).

    Raises :class:`Refusal`: code ``protocol`` for a malformed hello, ``auth`` for a missing or
    wrong token (compared in constant time).
    """
    try:
        hello = parse_hello(body)
    except ProtocolError as exc:
        raise Refusal("protocol", str(exc)) from None
    if token is not None:
        given = hello.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8"), token.encode("utf-8")
        ):
            raise Refusal(
                "auth", "authorization violation: the token in the hello is missing or wrong"
            )
    name = hello.get("name")
    return name if isinstance(name, str) and name else None


def welcome_frame(max_frame_size: int, heartbeat_interval: float) -> bytes:
    """The server's answer to an accepted hello."""
    return encode_json_frame(
        {
            "welcome": PROTOCOL,
            "protocol": PROTOCOL_VERSION,
            "max_frame_size": max_frame_size,
            "heartbeat_interval": heartbeat_interval,
            "features": [FEATURE_COUNT],
        }
    )
