"""local:// beside multiprocessing.Queue and persist-queue's SQLiteAckQueue, process to process.

One-way throughput: a sender process publishes N small messages that a receiver process takes
(and decodes) one by one; the rate is measured at the receiver from the first message to the
last. Anchors: ``multiprocessing.Queue`` (not durable: a pipe and a feeder thread) and
``persistqueue.SQLiteAckQueue`` (durable SQLite; its receiver polls, since its blocking ``get``
only wakes for puts made in its own process).

Ping-pong: one process sends, the other answers, the first waits for the answer; p50 of the
round trip over sequential exchanges.

Work queue: one process puts N items, another takes and acks each (WorkQueue put + get + ack
against SQLiteAckQueue put + get + ack); items per second from the first put to the last ack.

Run alone: ``python benchmarks/bench_local.py [--quick]``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from _common import WARM_UP, percentiles, row

PAYLOAD = {"seq": 0, "data": "x" * 64}
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the default place of local://


def _report(**values: float) -> None:
    print(json.dumps(values), flush=True)


# -- children ---------------------------------------------------------------------------------


def _rx_local(directory: str, n: str) -> None:
    from eventforge.transports.local import LocalTransport

    total = int(n)
    transport = LocalTransport(directory)
    done = threading.Event()
    stamps: list[float] = []
    count = 0

    def on_message(message: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            stamps.append(time.perf_counter())
        if count == total:
            stamps.append(time.perf_counter())
            done.set()

    transport.subscribe("bench.oneway", on_message)
    print("ready", flush=True)
    done.wait(300)
    _report(rate=(total - 1) / (stamps[-1] - stamps[0]))
    transport.close()


def _rx_persist(directory: str, n: str) -> None:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    total = int(n)
    queue = SQLiteAckQueue(directory, multithreading=True, auto_commit=True)
    print("ready", flush=True)
    first = 0.0
    count = 0
    while count < total:
        try:
            item = queue.get(block=False)
        except Empty:
            time.sleep(0.0005)
            continue
        queue.ack(item)
        count += 1
        if count == 1:
            first = time.perf_counter()
    _report(rate=(total - 1) / (time.perf_counter() - first))


def _echo_local(directory: str) -> None:
    from eventforge.message import Message
    from eventforge.transports.local import LocalTransport

    transport = LocalTransport(directory)
    transport.subscribe("bench.ping", lambda m: transport.send(Message("bench.pong", m.payload)))
    print("ready", flush=True)
    threading.Event().wait(300)


def _wq_local(directory: str, n: str) -> None:
    from eventforge.transports.local import LocalTransport
    from eventforge.workqueue import WorkQueue

    transport = LocalTransport(directory)
    queue = WorkQueue("bench", transport)
    print("ready", flush=True)
    for _ in range(int(n)):
        delivery = queue.get(timeout=60)
        assert delivery is not None
        delivery.ack()
    _report(end=time.time())
    transport.close()


ROLES = {"rx-local": _rx_local, "rx-persist": _rx_persist, "echo-local": _echo_local,
         "wq-local": _wq_local}  # fmt: skip


def _spawn(role: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", role, *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"benchmark child {role} failed to start: {line!r}")
    return proc


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    assert proc.stdout is not None
    values: dict[str, float] = json.loads(proc.stdout.readline())
    proc.wait(30)
    return values


# -- one-way ------------------------------------------------------------------------------------


def _oneway_local(n: int) -> float:
    from eventforge.message import Message
    from eventforge.transports.local import LocalTransport

    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        rx = _spawn("rx-local", directory, str(n))
        with LocalTransport(directory) as transport:
            for i in range(n):
                transport.send(Message("bench.oneway", {**PAYLOAD, "seq": i}))
            return _result(rx)["rate"]


def _mp_receiver(queue: Any, n: int, out: Any) -> None:
    first = 0.0
    for count in range(1, n + 1):
        queue.get()
        if count == 1:
            first = time.perf_counter()
    out.put((n - 1) / (time.perf_counter() - first))


def _oneway_mp(n: int) -> float:
    ctx = mp.get_context("fork")
    queue, out = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_mp_receiver, args=(queue, n, out))
    proc.start()
    for i in range(n):
        queue.put({**PAYLOAD, "seq": i})
    rate = float(out.get(timeout=300))
    proc.join(30)
    return rate


def _oneway_persist(n: int) -> float:
    from persistqueue import SQLiteAckQueue

    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        queue = SQLiteAckQueue(directory, multithreading=True, auto_commit=True)
        rx = _spawn("rx-persist", directory, str(n))
        for i in range(n):
            queue.put({**PAYLOAD, "seq": i})
        return _result(rx)["rate"]


# -- ping-pong ----------------------------------------------------------------------------------


def _pingpong_local(calls: int) -> tuple[float, float]:
    from eventforge.message import Message
    from eventforge.transport import nonblocking
    from eventforge.transports.local import LocalTransport

    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        echo = _spawn("echo-local", directory)
        try:
            with LocalTransport(directory) as transport:
                answered = threading.Semaphore(0)
                transport.subscribe("bench.pong", nonblocking(lambda m: answered.release()))
                while transport.send_counted(Message("bench.ping", 0)) == 0:
                    time.sleep(0.01)
                answered.acquire(timeout=10)
                times = []
                for i in range(calls + WARM_UP):
                    start = time.perf_counter()
                    transport.send(Message("bench.ping", i))
                    answered.acquire(timeout=10)
                    times.append(time.perf_counter() - start)
                return percentiles(times[WARM_UP:])
        finally:
            echo.kill()


def _mp_echo(ping: Any, pong: Any) -> None:
    while True:
        item = ping.get()
        if item is None:
            return
        pong.put(item)


def _pingpong_mp(calls: int) -> tuple[float, float]:
    ctx = mp.get_context("fork")
    ping, pong = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_mp_echo, args=(ping, pong))
    proc.start()
    ping.put(PAYLOAD)
    pong.get(timeout=30)
    times = []
    for i in range(calls + WARM_UP):
        start = time.perf_counter()
        ping.put({**PAYLOAD, "seq": i})
        pong.get()
        times.append(time.perf_counter() - start)
    ping.put(None)
    proc.join(30)
    return percentiles(times[WARM_UP:])


# -- work queue ---------------------------------------------------------------------------------


def _workqueue_local(n: int) -> float:
    from eventforge.transports.local import LocalTransport
    from eventforge.workqueue import WorkQueue

    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        consumer = _spawn("wq-local", directory, str(n))
        with LocalTransport(directory) as transport:
            queue = WorkQueue("bench", transport)
            start = time.time()
            for i in range(n):
                queue.put({**PAYLOAD, "seq": i})
            end = _result(consumer)["end"]
            queue.close()
            return n / (end - start)


def _workqueue_persist(n: int) -> float:
    from persistqueue import SQLiteAckQueue

    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        queue = SQLiteAckQueue(directory, multithreading=True, auto_commit=True)
        rx = _spawn("rx-persist", directory, str(n))
        start = time.perf_counter()
        for i in range(n):
            queue.put({**PAYLOAD, "seq": i})
        rx.wait(300)
        return n / (time.perf_counter() - start)


# -- the run ------------------------------------------------------------------------------------


def _row(scenario: str, ours: float, anchor: str, value: float, unit: str, goal: str,
         higher: bool = True) -> dict[str, Any]:  # fmt: skip
    return {"area": "local", **row(scenario, ours, anchor, value, unit, goal, higher)}


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure local:// and its anchors in this run; return the rows (median of the rounds)."""
    n = 1_000 if quick else 20_000
    slow_n = 200 if quick else 2_000
    calls = 100 if quick else 5_000
    repeats = 1 if quick else 3
    got: dict[str, list[Any]] = {k: [] for k in ("ours", "mp", "pq", "ping", "mping", "wq", "pqwq")}
    for _ in range(repeats):
        got["ours"].append(_oneway_local(n))
        got["mp"].append(_oneway_mp(n))
        got["pq"].append(_oneway_persist(slow_n))
        got["ping"].append(_pingpong_local(calls))
        got["mping"].append(_pingpong_mp(calls))
        got["wq"].append(_workqueue_local(slow_n * 2))
        got["pqwq"].append(_workqueue_persist(slow_n))
    m = {k: statistics.median(v) for k, v in got.items() if k not in ("ping", "mping")}
    ping50, ping99 = (statistics.median(p[i] for p in got["ping"]) for i in (0, 1))
    mping50, mping99 = (statistics.median(p[i] for p in got["mping"]) for i in (0, 1))
    return [
        _row("one-way msgs/s (process->process)", m["ours"], "multiprocessing.Queue", m["mp"],
             "msgs/s", ">= 0.5x"),
        _row("one-way msgs/s (process->process)", m["ours"], "persist-queue SQLiteAckQueue",
             m["pq"], "msgs/s", ">= 10x"),
        _row("ping-pong p50 round trip", ping50, "multiprocessing.Queue p50", mping50, "us",
             "<= 2x", False),
        _row("ping-pong p99 round trip", ping99, "multiprocessing.Queue p99", mping99, "us",
             "report", False),
        _row("work queue put+get+ack items/s", m["wq"], "persist-queue SQLiteAckQueue",
             m["pqwq"], "items/s", ">= 10x"),
    ]  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        ROLES[sys.argv[2]](*sys.argv[3:])
    else:
        for r in run("--quick" in sys.argv):
            print(json.dumps(r))
