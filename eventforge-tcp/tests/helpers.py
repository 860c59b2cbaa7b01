"""Small helpers shared by the TCP tests."""

from __future__ import annotations

import socket

import pydantic_core
from eventforge.testing import wait_until
from eventforge_tcp.framing import FrameDecoder, encode_frame, encode_json_frame
from eventforge_tcp.transport import TCPServerTransport

__all__ = ["HELLO", "raw_connect", "stuck_subscriber", "wait_closed", "wait_until"]

HELLO = encode_json_frame({"hello": "eventforge", "protocol": 1})


def raw_connect(port: int, *, hello: bool = True, rcvbuf: int | None = None) -> socket.socket:
    """A raw socket to the server on ``port``; after the handshake unless ``hello=False``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    if hello:
        sock.sendall(HELLO)
        decoder = FrameDecoder()
        frames: list[bytes] = []
        while not frames:
            frames = decoder.feed(sock.recv(4096))
        assert b"welcome" in frames[0]
    return sock


def stuck_subscriber(server: TCPServerTransport, pattern: str) -> socket.socket:
    """A peer subscribed to ``pattern`` that never reads: its small receive buffer fills fast.

    Returns once the server has registered the subscription; the caller closes the socket.
    """
    before = server.stats()["subscriptions"]
    sock = raw_connect(server.port, rcvbuf=4096)
    sub = {
        "version": 1,
        "id": "s",
        "topic": "$tcp.sub",
        "payload": {"sid": "1", "pattern": pattern},
    }
    sock.sendall(encode_frame(pydantic_core.to_json(sub)))
    if not wait_until(lambda: server.stats()["subscriptions"] > before):
        sock.close()
        raise AssertionError(f"the server never registered the raw subscription to {pattern!r}")
    return sock


def wait_closed(sock: socket.socket) -> bytes:
    """Read until the server closes the connection; return everything it sent."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
