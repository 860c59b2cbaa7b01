"""What a Service's health costs on the hot path, beside the same subscription made by hand.

Scenarios (memory transport, one sync handler, median of interleaved rounds after a warm-up):

* publish -> deliver through a :class:`~eventforge.service.Service` subscription with health
  and probes on (probe interval 0.2 s, so probes run during the measurement), vs the same
  handler subscribed with ``MessageQueue.subscribe`` (goal: at least 0.95x).
* The same with probes off (``probe_interval=None``): the per-delivery tracking alone.
* Scheduler firing jitter: a ``Service.every`` schedule's ``fired_at - scheduled`` (p50 / p99)
  on the memory transport and on a private Redis (each tick claimed with ``SET NX``), beside a
  plain ``time.sleep`` loop waking on the same grid in the same process at the same time
  (reported).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import percentiles, row
from eventforge import Message, MessageQueue, connect
from eventforge.service import Service
from eventforge.service.schedule import Every, Tick
from eventforge.testing.brokers import RedisServer

PAYLOAD = {"user": "alice", "n": 1}


def _handler(message: Message) -> None:
    pass


def medians(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    for measure in measures.values():  # warm-up
        measure()
    samples: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure())
    return {k: statistics.median(v) for k, v in samples.items()}


def publish_rate(queue: MessageQueue, n: int) -> Callable[[], float]:
    def measure() -> float:
        publish = queue.publish
        start = time.perf_counter()
        for _ in range(n):
            publish("bench.topic", PAYLOAD)
        return n / (time.perf_counter() - start)

    return measure


def _service(probes: bool) -> Service:
    svc = Service("bench", "memory", probe_interval=0.2 if probes else None)
    svc.on("bench.topic")(_handler)
    svc.start()
    return svc


def memory_rows(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 200_000
    rounds = 1 if quick else 5
    plain = MessageQueue(name="bench-plain")
    plain.subscribe("bench.topic", _handler)
    probed = _service(probes=True)
    tracked = _service(probes=False)
    try:
        figures = medians(
            rounds,
            {
                "plain": publish_rate(plain, n),
                "probed": publish_rate(probed.queue, n),
                "tracked": publish_rate(tracked.queue, n),
            },
        )
    finally:
        probed.stop()
        tracked.stop()
        plain.close()
    return [
        row(
            "publish -> deliver, Service subscription with health and probes (memory)",
            figures["probed"],
            "MessageQueue.subscribe, same handler",
            figures["plain"],
            "msgs/s",
            ">= 0.95x",
        ),
        row(
            "publish -> deliver, Service subscription, probes off (memory)",
            figures["tracked"],
            "MessageQueue.subscribe, same handler",
            figures["plain"],
            "msgs/s",
            ">= 0.95x",
        ),
    ]


def jitter(url: str | None, interval: float, ticks: int) -> tuple[float, ...]:
    """Scheduler and sleep-loop lateness behind their ticks (ms): p50, p99 of each."""
    transport = connect(url) if url else None
    svc = Service(f"jitter-{time.time_ns()}", transport, probe_interval=None)
    fired: list[float] = []

    @svc.every(interval, name="beat")
    def beat(tick: Tick) -> None:
        fired.append((tick.fired_at - tick.scheduled).total_seconds())

    slept: list[float] = []
    grid = Every(interval)

    def sleep_loop() -> None:
        while len(slept) < ticks + 1:
            tick = grid.next_after(time.time())
            while (left := tick - time.time()) > 0:
                time.sleep(left)
            slept.append(time.time() - tick)

    anchor = threading.Thread(target=sleep_loop)
    with svc:
        anchor.start()
        deadline = time.monotonic() + (ticks + 5) * interval + 10
        while len(fired) < ticks + 1 and time.monotonic() < deadline:
            time.sleep(interval)
        anchor.join()
    if transport is not None:
        transport.close()
    return (*percentiles(fired[1:], 1e3), *percentiles(slept[1:], 1e3))


def jitter_rows(quick: bool) -> list[dict[str, Any]]:
    interval, ticks = (0.05, 10) if quick else (0.1, 200)
    server = RedisServer()
    server.start()
    try:
        figures = {
            "memory": jitter(None, interval, ticks),
            "redis": jitter(server.url, interval, ticks),
        }
    finally:
        server.cleanup()
    rows = []
    for where, (p50, p99, sleep50, sleep99) in figures.items():
        rows += [
            row(f"schedule every({interval}) firing jitter p50 ({where})", p50,
                "time.sleep loop on the same grid p50", sleep50, "ms", "reported",
                higher_is_better=False),
            row(f"schedule every({interval}) firing jitter p99 ({where})", p99,
                "time.sleep loop on the same grid p99", sleep99, "ms", "reported",
                higher_is_better=False),
        ]  # fmt: skip
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    return memory_rows(quick) + jitter_rows(quick)


if __name__ == "__main__":
    for r in run(False):
        print(
            f"{r['scenario']}: {r['eventforge']:.0f} vs {r['anchor_value']:.0f} = {r['ratio']:.2f}x"
        )
