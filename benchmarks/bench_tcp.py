"""TCP transport beside raw sockets and pyzmq, process to process, in the same run.

One-way throughput: a sender process publishes N small messages to a receiver process, which
decodes every frame; the rate is measured at the receiver from the first message to the last
(best of three interleaved rounds in a full run).
Anchors: a raw socket sender doing one ``sendall`` per frame (TCP_NODELAY), a raw sender that
joins 100 frames per ``sendall``, and pyzmq PUSH/PULL; their receivers parse frames from large
reads and decode the JSON, as eventforge's does.

RPC round trip: sequential calls to an ``echo`` method served by another process, p50 / p99.
Anchors: a raw socket ping-pong and pyzmq REQ/REP carrying the same JSON.

Run alone: ``python benchmarks/bench_tcp.py [--quick]``.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from _common import percentiles, row

HEADER = struct.Struct(">I")
PAYLOAD = {"seq": 0, "data": "x" * 64}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body() -> bytes:
    from eventforge.message import Message
    from eventforge.wire import WireCodec

    return WireCodec().encode(Message("bench.oneway", PAYLOAD))


# -- receivers and servers (run in a child process) --------------------------------------------


def _report(first: float, last: float, n: int) -> None:
    print(json.dumps({"rate": (n - 1) / (last - first) if last > first else 0.0}), flush=True)


def _rx_eventforge(port: int, n: int, inline: int = 0) -> None:
    """``inline``: the callback is marked ``nonblocking`` and runs on the I/O thread (no hand-off
    to the delivery thread), as a zmq PULL loop handles what it reads on the reading thread."""
    import threading

    from eventforge.transport import nonblocking
    from eventforge_tcp.transport import TCPServerTransport

    srv = TCPServerTransport("127.0.0.1", port, max_pending=100_000).start()
    done = threading.Event()
    stamps: list[float] = []
    count = 0

    def on_message(message: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            stamps.append(time.perf_counter())
        if count == n:
            stamps.append(time.perf_counter())
            done.set()

    srv.subscribe("bench.oneway", nonblocking(on_message) if inline else on_message)
    print("ready", flush=True)
    done.wait(120)
    _report(stamps[0], stamps[-1], n)
    srv.close()


def _rx_raw(port: int, n: int) -> None:
    import pydantic_core
    from eventforge_tcp.framing import FrameDecoder

    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    conn, _ = listener.accept()
    decoder = FrameDecoder()
    count = 0
    first = 0.0
    while count < n:
        data = conn.recv(262144)
        if not data:
            break
        for body in decoder.feed(data):
            pydantic_core.from_json(body)
            count += 1
            if count == 1:
                first = time.perf_counter()
    _report(first, time.perf_counter(), n)


def _rx_zmq(port: int, n: int) -> None:
    import pydantic_core
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    first = 0.0
    for count in range(1, n + 1):
        pydantic_core.from_json(pull.recv())
        if count == 1:
            first = time.perf_counter()
    _report(first, time.perf_counter(), n)
    pull.close(0)
    ctx.term()


def _rpc_eventforge(port: int, inline: int = 0) -> None:
    import threading

    from eventforge import MessageQueue, RPCServer
    from eventforge_tcp.transport import TCPServerTransport

    queue = MessageQueue(transport=TCPServerTransport("127.0.0.1", port).start())
    server = RPCServer(queue, service_name="bench", inline=bool(inline))
    server.add_method("echo", lambda value: value)
    server.serve(blocking=False)
    print("ready", flush=True)
    threading.Event().wait(300)


def _rpc_raw(port: int) -> None:
    import pydantic_core

    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 4:
            (size,) = HEADER.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            body, buf = buf[4 : 4 + size], buf[4 + size :]
            reply = pydantic_core.to_json(pydantic_core.from_json(body))
            conn.sendall(HEADER.pack(len(reply)) + reply)


def _rpc_zmq(port: int) -> None:
    import pydantic_core
    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    while True:
        rep.send(pydantic_core.to_json(pydantic_core.from_json(rep.recv())))


ROLES = {
    "rx-eventforge": _rx_eventforge,
    "rx-raw": _rx_raw,
    "rx-zmq": _rx_zmq,
    "rpc-eventforge": _rpc_eventforge,
    "rpc-raw": _rpc_raw,
    "rpc-zmq": _rpc_zmq,
}


def _spawn(role: str, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", role, str(port), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"benchmark child {role} failed to start: {line!r}")
    return proc


def _result(proc: subprocess.Popen[str]) -> float:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return float(json.loads(line)["rate"])


# -- senders and callers (run in this process) --------------------------------------------------


def _oneway_eventforge(n: int, inline: bool = False) -> float:
    from eventforge.message import Message
    from eventforge_tcp.transport import TCPClientTransport

    port = _free_port()
    proc = _spawn("rx-eventforge", port, str(n), str(int(inline)))
    client = TCPClientTransport("127.0.0.1", port).connect()
    for i in range(n):
        client.send(Message("bench.oneway", {"seq": i, "data": PAYLOAD["data"]}))
    rate = _result(proc)
    client.close()
    proc.wait(30)
    return rate


def _oneway_raw(n: int, batch: int) -> float:
    from eventforge.message import Message
    from eventforge.wire import WireCodec

    codec = WireCodec()
    port = _free_port()
    proc = _spawn("rx-raw", port, str(n))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending: list[bytes] = []
    for i in range(n):
        body = codec.encode(Message("bench.oneway", {"seq": i, "data": PAYLOAD["data"]}))
        frame = HEADER.pack(len(body)) + body
        if batch == 1:
            sock.sendall(frame)
        else:
            pending.append(frame)
            if len(pending) >= batch:
                sock.sendall(b"".join(pending))
                pending = []
    if pending:
        sock.sendall(b"".join(pending))
    rate = _result(proc)
    sock.close()
    proc.wait(30)
    return rate


def _oneway_zmq(n: int) -> float:
    import zmq
    from eventforge.message import Message
    from eventforge.wire import WireCodec

    codec = WireCodec()
    port = _free_port()
    proc = _spawn("rx-zmq", port, str(n))
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    for i in range(n):
        push.send(codec.encode(Message("bench.oneway", {"seq": i, "data": PAYLOAD["data"]})))
    rate = _result(proc)
    push.close(0)
    ctx.term()
    proc.wait(30)
    return rate


def _rtt_eventforge(n: int, inline: bool = False) -> tuple[float, float]:
    """``RPCClient.call`` round trips; ``inline``: the server runs the method on its I/O thread
    (``RPCServer(inline=True)``), as a zmq REP loop answers on the thread that reads."""
    from eventforge import MessageQueue, RPCClient
    from eventforge_tcp.transport import TCPClientTransport

    port = _free_port()
    proc = _spawn("rpc-eventforge", port, str(int(inline)))
    queue = MessageQueue(transport=TCPClientTransport("127.0.0.1", port).connect())
    client = RPCClient(queue, service_name="bench", timeout=10)
    for _ in range(min(200, n)):
        client.call("echo", PAYLOAD)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.call("echo", PAYLOAD)
        samples.append(time.perf_counter() - t0)
    queue.close()
    proc.kill()
    proc.wait(10)
    return percentiles(samples)


def _rtt_raw(n: int) -> tuple[float, float]:
    import pydantic_core

    port = _free_port()
    proc = _spawn("rpc-raw", port)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = pydantic_core.to_json({"method": "echo", "args": [PAYLOAD], "kwargs": {}})
    frame = HEADER.pack(len(body)) + body
    samples = []
    for i in range(n + min(200, n)):
        t0 = time.perf_counter()
        sock.sendall(frame)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + HEADER.unpack_from(buf)[0]:
            buf += sock.recv(65536)
        pydantic_core.from_json(buf[4:])
        if i >= min(200, n):
            samples.append(time.perf_counter() - t0)
    sock.close()
    proc.kill()
    proc.wait(10)
    return percentiles(samples)


def _rtt_zmq(n: int) -> tuple[float, float]:
    import pydantic_core
    import zmq

    port = _free_port()
    proc = _spawn("rpc-zmq", port)
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{port}")
    body = pydantic_core.to_json({"method": "echo", "args": [PAYLOAD], "kwargs": {}})
    samples = []
    for i in range(n + min(200, n)):
        t0 = time.perf_counter()
        req.send(body)
        pydantic_core.from_json(req.recv())
        if i >= min(200, n):
            samples.append(time.perf_counter() - t0)
    req.close(0)
    ctx.term()
    proc.kill()
    proc.wait(10)
    return percentiles(samples)


def _row(
    scenario: str, ours: float, anchor: str, value: float, unit: str, goal: str, higher: bool
) -> dict[str, Any]:
    return row(scenario, ours, anchor, value, unit, goal, higher)


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure eventforge TCP and its anchors in this run; return the rows."""
    n = 3_000 if quick else 100_000
    calls = 300 if quick else 10_000
    repeats = 1 if quick else 3
    # Rounds interleave the contenders so that a busy spell of the machine hits them alike;
    # each reports its best round.
    rates: dict[str, list[float]] = {
        "ours": [], "inline": [], "zmq": [], "raw1": [], "raw100": []
    }  # fmt: skip
    for _ in range(repeats):
        rates["ours"].append(_oneway_eventforge(n))
        rates["inline"].append(_oneway_eventforge(n, inline=True))
        rates["zmq"].append(_oneway_zmq(n))
        rates["raw1"].append(_oneway_raw(n, 1))
        rates["raw100"].append(_oneway_raw(n, 100))
    ours, inline, zmq_rate, raw1, raw100 = (
        max(rates[k]) for k in ("ours", "inline", "zmq", "raw1", "raw100")
    )
    rows = [
        _row(
            "one-way msgs/s (process->process), nonblocking subscriber on the I/O thread",
            inline,
            "pyzmq PUSH/PULL",
            zmq_rate,
            "msgs/s",
            ">= 1.0x",
            True,
        ),
        _row(
            "one-way msgs/s (process->process)",
            ours,
            "pyzmq PUSH/PULL",
            zmq_rate,
            "msgs/s",
            ">= 0.8x",
            True,
        ),
        _row(
            "one-way msgs/s (process->process)",
            ours,
            "raw sendall per frame",
            raw1,
            "msgs/s",
            "report",
            True,
        ),
        _row(
            "one-way msgs/s (process->process)",
            ours,
            "raw sendall per 100 frames",
            raw100,
            "msgs/s",
            "report",
            True,
        ),
    ]
    ef50, ef99 = _rtt_eventforge(calls)
    in50, in99 = _rtt_eventforge(calls, inline=True)
    zmq50, zmq99 = _rtt_zmq(calls)
    raw50, raw99 = _rtt_raw(calls)
    rows += [
        _row(
            "RPC round trip p50, RPCServer(inline=True)",
            in50,
            "pyzmq REQ/REP p50",
            zmq50,
            "us",
            "<= 1.0x",
            False,
        ),
        _row(
            "RPC round trip p99, RPCServer(inline=True)",
            in99,
            "pyzmq REQ/REP p99",
            zmq99,
            "us",
            "report",
            False,
        ),
        _row(
            "RPC round trip p50, RPCServer(inline=True)",
            in50,
            "raw socket ping-pong p50",
            raw50,
            "us",
            "<= 2.5x",
            False,
        ),
        _row("RPC round trip p50", ef50, "pyzmq REQ/REP p50", zmq50, "us", "<= 1.5x", False),
        _row("RPC round trip p99", ef99, "pyzmq REQ/REP p99", zmq99, "us", "report", False),
        _row("RPC round trip p50", ef50, "raw socket ping-pong p50", raw50, "us", "report", False),
        _row("RPC round trip p99", ef99, "raw socket ping-pong p99", raw99, "us", "report", False),
    ]
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, port_arg, *rest = sys.argv[2:]
        ROLES[role](int(port_arg), *(int(x) for x in rest))  # type: ignore[operator]
    else:
        for row in run("--quick" in sys.argv):
            print(
                f"{row['scenario']:<38} eventforge={row['eventforge']:>12,.1f} "
                f"{row['anchor']:<28} {row['anchor_value']:>12,.1f} {row['unit']:<7} "
                f"ratio={row['ratio']:.2f} goal {row['goal']}"
            )
