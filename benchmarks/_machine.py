"""The machine's own anchors, printed above every run so that readers can compare machines.

A loopback TCP ping-pong between two processes and a ``queue.SimpleQueue`` ping-pong between two
threads: the floor that any cross-process and any cross-thread round trip pays on this machine.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from _common import percentiles

_ECHO = """
import socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = conn.recv(64)
    if not data:
        break
    conn.sendall(data)
"""


def loopback_ping_pong(n: int) -> tuple[float, float]:
    """p50 and p99 (µs) of a one-byte round trip to an echo process over loopback TCP."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            samples: list[float] = []
            for i in range(n + 500):
                t0 = time.perf_counter()
                sock.sendall(b"x")
                sock.recv(64)
                if i >= 500:
                    samples.append(time.perf_counter() - t0)
        return percentiles(samples)
    finally:
        child.wait(10)


def simplequeue_ping_pong(n: int) -> tuple[float, float]:
    """p50 and p99 (µs) of a round trip to another thread through two ``queue.SimpleQueue``."""
    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (item := there.get()) is not None:
            back.put(item)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    samples: list[float] = []
    for i in range(n + 500):
        t0 = time.perf_counter()
        there.put(i)
        back.get()
        if i >= 500:
            samples.append(time.perf_counter() - t0)
    there.put(None)
    thread.join()
    return percentiles(samples)


def anchors(quick: bool) -> dict[str, Any]:
    """Both anchors, p50 and p99 in µs."""
    n = 2_000 if quick else 10_000
    tcp50, tcp99 = loopback_ping_pong(n)
    sq50, sq99 = simplequeue_ping_pong(n)
    return {
        "loopback_tcp_ping_pong_us": {"p50": tcp50, "p99": tcp99},
        "simplequeue_thread_ping_pong_us": {"p50": sq50, "p99": sq99},
    }


def describe(machine: dict[str, Any]) -> str:
    tcp = machine["loopback_tcp_ping_pong_us"]
    sq = machine["simplequeue_thread_ping_pong_us"]
    return (
        f"machine anchors: loopback TCP ping-pong p50 {tcp['p50']:.1f} µs, p99 {tcp['p99']:.1f} µs; "
        f"SimpleQueue thread ping-pong p50 {sq['p50']:.1f} µs, p99 {sq['p99']:.1f} µs"
    )
