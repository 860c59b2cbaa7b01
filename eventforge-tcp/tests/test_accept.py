"""A server out of file descriptors, or at its connection cap, refuses clearly and recovers.

The descriptor test runs the server in a child process whose ``RLIMIT_NOFILE`` is far below
``max_connections``, fills it with connections from this process, and checks what an operator
would see: a bounded number of log lines (no busy loop flooding the log), existing clients
still served, a new client told why it was turned away, and service back once descriptors are
free again.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.certs import Certificates, make_certificates, openssl_available
from eventforge.testing.conformance import Collector
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import HELLO, wait_until

resource = pytest.importorskip("resource", reason="RLIMIT_NOFILE needs a POSIX system")

FD_LIMIT = 48


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CHILD = textwrap.dedent(
    """
    import logging, resource, sys, time
    from eventforge.message import Message
    from eventforge_tcp.transport import TCPServerTransport

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    server = TCPServerTransport("127.0.0.1", 0, max_connections=1024, hello_timeout=60).start()
    server.subscribe("echo.in", lambda m: server.send(Message("echo.out", m.payload)))
    resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
    print(server.port, flush=True)
    sys.stdin.readline()  # run until the test closes our stdin
    print(server.stats()["accept_failures"], server.stats()["connections_refused"], flush=True)
    """
)


def test_out_of_descriptors_backs_off_refuses_clearly_and_recovers(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(limit=FD_LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    assert child.stdin is not None
    assert child.stdout is not None
    fillers: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        existing = TCPClientTransport("127.0.0.1", port).connect()
        echoes = Collector()
        existing.subscribe("echo.out", echoes)
        for _ in range(FD_LIMIT + 10):  # more than the child can hold: the rest wait in backlog
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(HELLO)
            fillers.append(sock)

        # A new client is told why it is turned away (not "did not complete the hello").
        with pytest.raises(TransportError, match=r"busy.*file descriptors"):
            TCPClientTransport("127.0.0.1", port, reconnect=False, connect_timeout=10).connect()
        cpu_before, started = cpu_seconds(child.pid), time.monotonic()
        # Several back-off periods pass while descriptors stay exhausted.
        for n in range(3):
            with pytest.raises(TransportError, match="busy"):
                TCPClientTransport("127.0.0.1", port, reconnect=False, connect_timeout=10).connect()
            time.sleep(0.5)
            existing.send(Message("echo.in", n))
        assert echoes.wait_for_count(3, 10.0), "an existing client lost service"
        # While descriptors stay exhausted the server idles between back-off periods (measured:
        # about 0.01 s of CPU in 2.5 s); a loop that kept watching the still-readable listener would
        # take all the CPU it can get (over half a core even on a busy machine).
        cpu_used, elapsed = cpu_seconds(child.pid) - cpu_before, time.monotonic() - started
        assert cpu_used < 0.2 * elapsed, f"{cpu_used:.2f} s of CPU in {elapsed:.2f} s"

        for sock in fillers:
            sock.close()
        fillers.clear()

        def connects() -> bool:
            try:
                TCPClientTransport("127.0.0.1", port, reconnect=False).connect().close()
            except TransportError:
                return False
            return True

        assert wait_until(connects, 20.0), "the server never accepted connections again"
        existing.close()
        child.stdin.write("stop\n")
        child.stdin.flush()
        failures, refused = map(int, child.stdout.readline().split())
    finally:
        for sock in fillers:
            sock.close()
        child.kill()
        child.wait()
    lines = log_path.read_text().splitlines()
    accept_lines = [line for line in lines if "accept" in line or "file descriptors" in line]
    print(
        f"accept_failures={failures} refused={refused} log_lines={len(accept_lines)} "
        f"cpu_during_exhaustion={cpu_used:.2f}s of {elapsed:.2f}s"
    )
    assert failures >= 1
    assert refused >= 4  # the four clients above, at least
    # One line when it starts, then at most one per back-off period (about 1 s each).
    assert 1 <= len(accept_lines) <= 20, accept_lines[:5]
    # Each line tells how many connections it refused; none counts a refusal twice (the last
    # period's may not be logged yet when the child is stopped).
    logged = [re.search(r"refused (\d+) connection\(s\)", line) for line in accept_lines]
    assert all(logged), accept_lines
    counts = [int(match.group(1)) for match in logged if match]
    assert counts[0] >= 1, accept_lines[0]
    assert sum(counts) <= refused, (counts, refused)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if not openssl_available():
        pytest.skip("openssl is not installed")
    return make_certificates(tmp_path_factory.mktemp("pki"))


def test_tls_server_at_max_connections_refuses_with_busy_not_a_tls_error(
    pki: Certificates,
) -> None:
    server = TCPServerTransport(
        "127.0.0.1", 0, ssl_context=pki.server_context(), max_connections=1
    ).start()
    try:
        first = TCPClientTransport("127.0.0.1", server.port, ssl_context=pki.client_context())
        first.connect()
        extra = TCPClientTransport(
            "127.0.0.1", server.port, ssl_context=pki.client_context(), reconnect=False
        )
        with pytest.raises(TransportError, match=r"refused the connection \(busy\).*max_conn"):
            extra.connect()
        assert server.stats()["connections_refused"] == 1
        assert wait_until(lambda: server.stats()["connections"] == 1)
        got = Collector()
        first.subscribe("still.ok", got)
        server.send(Message("still.ok", 1))
        assert got.wait_for_count(1, 5.0)
        first.close()
    finally:
        server.close()
