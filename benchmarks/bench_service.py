"""What a Service's health costs on the hot path, beside the same subscription made by hand.

Scenarios (memory transport, one sync handler, median of interleaved rounds after a warm-up):

* publish -> deliver through a :class:`~eventforge.service.Service` subscription with health
  and probes on (probe interval 0.2 s, so probes run during the measurement), vs the same
  handler subscribed with ``MessageQueue.subscribe`` (goal: at least 0.95x).
* The same with probes off (``probe_interval=None``): the per-delivery tracking alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import row
from eventforge import Message, MessageQueue
from eventforge.service import Service

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


def run(quick: bool) -> list[dict[str, Any]]:
    return memory_rows(quick)


if __name__ == "__main__":
    for r in run(False):
        print(
            f"{r['scenario']}: {r['eventforge']:.0f} vs {r['anchor_value']:.0f} = {r['ratio']:.2f}x"
        )
