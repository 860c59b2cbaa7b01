"""A frame must arrive whole within ``frame_timeout``: slow-drip peers are cut off and counted.

Every byte a peer sends is traffic, so a peer dripping one frame a byte at a time keeps the
heartbeat clock from ever running out. The frame deadline is what ends it; a peer that sends
many frames, each in time, is never touched by it.
"""

from __future__ import annotations

import select
import socket
import time

import pytest
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.testing.conformance import Collector
from eventforge_tcp.framing import encode_frame
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport, from_url

from .helpers import raw_connect, wait_until

BODY = b'{"version":1,"id":"d1","topic":"drip.test","payload":"' + b"x" * 200 + b'"}'


def peer_closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (reads and discards whatever it sent before)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def drip(socks: list[socket.socket], data: bytes, gap: float, until: float) -> list[bool]:
    """Send ``data`` one byte per ``gap`` seconds on every socket until each is closed by the
    server or ``until`` passes; return which ones the server closed."""
    closed = [False] * len(socks)
    position = 0
    while time.monotonic() < until and not all(closed):
        for i, sock in enumerate(socks):
            if closed[i] or peer_closed(sock):
                closed[i] = True
                continue
            try:
                sock.send(data[position % len(data) : position % len(data) + 1])
            except OSError:
                closed[i] = True
        position += 1
        time.sleep(gap)
    return [c or peer_closed(s) for c, s in zip(closed, socks)]


def test_slow_drip_peers_after_the_hello_are_disconnected_and_counted() -> None:
    # The heartbeat alone would never act: bytes arrive every 0.05 s, well inside it.
    server = TCPServerTransport(
        "127.0.0.1", 0, heartbeat_interval=0.2, heartbeat_timeout=0.6, frame_timeout=0.5
    ).start()
    try:
        peers = [raw_connect(server.port) for _ in range(20)]
        assert wait_until(lambda: server.stats()["connections"] == 20)
        closed = drip(peers, encode_frame(BODY), 0.05, time.monotonic() + 15.0)
        for sock in peers:
            sock.close()
        assert all(closed), f"{closed.count(False)} slow-drip peers are still connected"
        assert server.stats()["frame_timeouts"] == 20
        assert server.stats()["heartbeat_timeouts"] == 0
        with TCPClientTransport("127.0.0.1", server.port).connect() as client:
            got = Collector()
            client.subscribe("still.serving", got)
            server.send(Message("still.serving", 1))
            assert got.wait_for_count(1, 5.0)
    finally:
        server.close()


def test_frames_that_each_arrive_in_time_are_never_cut_off() -> None:
    """The deadline is per frame: a steady stream of frames, each slower than a burst but
    within ``frame_timeout``, keeps its connection however long it lasts."""
    server = TCPServerTransport("127.0.0.1", 0, frame_timeout=1.0).start()
    got = Collector()
    server.subscribe("drip.test", got)
    try:
        sock = raw_connect(server.port)
        frame = encode_frame(BODY)
        halves = (frame[: len(frame) // 2], frame[len(frame) // 2 :])
        for _ in range(8):  # 8 frames over ~2.4 s: each frame takes ~0.3 s to arrive
            for half in halves:
                sock.sendall(half)
                time.sleep(0.15)
        assert got.wait_for_count(8, 5.0)
        assert not peer_closed(sock)
        assert server.stats()["frame_timeouts"] == 0
        sock.close()
    finally:
        server.close()


def test_frame_timeout_is_validated_and_read_from_the_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        TCPServerTransport("127.0.0.1", 0, frame_timeout=0)
    assert info.value.key == "transport.frame_timeout"
    server = from_url("tcp://127.0.0.1:0?listen=1&frame_timeout=7.5")
    try:
        assert isinstance(server, TCPServerTransport)
        assert server.frame_timeout == 7.5
        assert TCPServerTransport("127.0.0.1", 0).frame_timeout == 30.0
    finally:
        server.close()
