"""In-process pub/sub and RPC on the memory transport, each beside its anchor in the same run.

Scenarios:

* ``MessageQueue.publish`` -> 1 sync handler vs blinker ``Signal.send`` -> 1 receiver
  (goal: at least 1.0x) and vs pyee ``EventEmitter.emit`` -> 1 handler (stretch goal: 1.0x).
* The same publish with 10,000 non-matching wildcard subscriptions registered, vs the
  1-subscription figure of the same run (goal: at least 0.8x).
* Fan-out: publish -> 10 sync handlers vs blinker send -> 10 receivers (reported).
* ``MessageQueue.request`` answered by a handler's ``reply`` (reported beside a plain
  subscribe-and-publish, the floor it stands on).
* RPC call round trip in-process: ``RPCClient.call`` vs the raw ``request``/``reply`` under it.

Every figure is the median of interleaved rounds after a warm-up; loops call bound methods
directly so that no benchmark pays for a lambda the other does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import blinker
import pyee
from _common import row
from eventforge import Message, MessageQueue, RPCClient, RPCServer

PAYLOAD = {"user": "alice", "action": "login", "n": 1}


def medians(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every measure once per round, interleaved, and return the median of each."""
    for measure in measures.values():  # warm-up
        measure()
    samples: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure())
    return {k: statistics.median(v) for k, v in samples.items()}


def _handler(message: Message) -> None:
    pass


def _receiver(sender: Any, **kwargs: Any) -> None:
    pass


def _emit_handler(payload: Any) -> None:
    pass


def publish_rate(queue: MessageQueue, topic: str, n: int) -> Callable[[], float]:
    def measure() -> float:
        publish = queue.publish
        payload = PAYLOAD
        start = time.perf_counter()
        for _ in range(n):
            publish(topic, payload)
        return n / (time.perf_counter() - start)

    return measure


def blinker_rate(receivers: int, n: int) -> Callable[[], float]:
    signal = blinker.Signal()
    kept = [lambda sender, **kw: None for _ in range(receivers - 1)]
    signal.connect(_receiver)
    for receiver in kept:
        signal.connect(receiver)

    def measure() -> float:
        send = signal.send
        payload = PAYLOAD
        start = time.perf_counter()
        for _ in range(n):
            send("bench.topic", payload=payload)
        return n / (time.perf_counter() - start)

    measure.keep = kept  # type: ignore[attr-defined]  # blinker holds weak references
    return measure


def pyee_rate(n: int) -> Callable[[], float]:
    emitter = pyee.EventEmitter()
    emitter.on("bench.topic", _emit_handler)

    def measure() -> float:
        emit = emitter.emit
        payload = PAYLOAD
        start = time.perf_counter()
        for _ in range(n):
            emit("bench.topic", payload)
        return n / (time.perf_counter() - start)

    return measure


def pubsub_rows(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 300_000
    rounds = 1 if quick else 5
    single = MessageQueue(name="bench-single")
    single.subscribe("bench.topic", _handler)
    crowded = MessageQueue(name="bench-crowded")
    crowded.subscribe("bench.topic", _handler)
    for i in range(10_000):
        crowded.subscribe(f"other{i}.*.events", _handler)
    fanout = MessageQueue(name="bench-fanout")
    for _ in range(10):
        fanout.subscribe("bench.topic", _handler)
    figures = medians(
        rounds,
        {
            "ef": publish_rate(single, "bench.topic", n),
            "blinker": blinker_rate(1, n),
            "pyee": pyee_rate(n),
            "ef_10k": publish_rate(crowded, "bench.topic", n),
            "ef_fan10": publish_rate(fanout, "bench.topic", n // 4),
            "blinker_fan10": blinker_rate(10, n // 4),
        },
    )
    for queue in (single, crowded, fanout):
        queue.close()
    return [
        row(
            "publish -> 1 sync handler (memory)",
            figures["ef"],
            "blinker Signal.send -> 1 receiver",
            figures["blinker"],
            "msgs/s",
            ">= 1.0x",
        ),
        row(
            "publish -> 1 sync handler (memory), vs pyee",
            figures["ef"],
            "pyee EventEmitter.emit -> 1 handler",
            figures["pyee"],
            "msgs/s",
            ">= 1.0x (stretch)",
        ),
        row(
            "publish with 10,000 non-matching wildcard subscriptions",
            figures["ef_10k"],
            "eventforge publish, 1 subscription (same run)",
            figures["ef"],
            "msgs/s",
            ">= 0.8x",
        ),
        row(
            "publish -> 10 sync handlers (fan-out)",
            figures["ef_fan10"],
            "blinker Signal.send -> 10 receivers",
            figures["blinker_fan10"],
            "msgs/s",
            "report",
        ),
    ]


def request_rate(queue: MessageQueue, topic: str, n: int) -> Callable[[], float]:
    def measure() -> float:
        request = queue.request
        start = time.perf_counter()
        for i in range(n):
            request(topic, i, timeout=5.0)
        return n / (time.perf_counter() - start)

    return measure


def rpc_rate(client: RPCClient, n: int) -> Callable[[], float]:
    def measure() -> float:
        call = client.call
        start = time.perf_counter()
        for i in range(n):
            call("add", i, 1)
        return n / (time.perf_counter() - start)

    return measure


def rpc_rows(quick: bool) -> list[dict[str, Any]]:
    n = 3_000 if quick else 50_000
    rounds = 1 if quick else 5
    queue = MessageQueue(name="bench-rpc")
    queue.subscribe("bench.echo", lambda m: queue.reply(m, m.payload))
    server = RPCServer(queue, service_name="bench")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)
    client = RPCClient(queue, service_name="bench")
    plain = MessageQueue(name="bench-plain")
    plain.subscribe("bench.topic", _handler)
    figures = medians(
        rounds,
        {
            "request": request_rate(queue, "bench.echo", n),
            "rpc": rpc_rate(client, n),
            "publish": publish_rate(plain, "bench.topic", n),
        },
    )
    server.stop()
    queue.close()
    plain.close()
    return [
        row(
            "request/reply round trip (memory)",
            figures["request"],
            "eventforge publish -> 1 handler (same run)",
            figures["publish"],
            "round trips/s",
            "report",
        ),
        row(
            "RPC call round trip in-process (memory)",
            figures["rpc"],
            "eventforge request/reply under it (same run)",
            figures["request"],
            "calls/s",
            "report",
        ),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Return the rows of every in-process scenario."""
    return pubsub_rows(quick) + rpc_rows(quick)


if __name__ == "__main__":
    for result in run(quick=False):
        print(
            f"{result['scenario']:<60} {result['eventforge']:>12,.0f} {result['unit']:<14}"
            f" {result['ratio']:.2f}x {result['anchor']} ({result['goal']})"
        )
