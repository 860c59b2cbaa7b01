"""What observing a call costs, beside the bare call in the same run.

Scenarios (calls/s; the ratio is observed / bare, so 1.0 would be free):

* ``@task(on_execute=[TimingMeter()])`` vs the bare function (reported; the seed's form).
* ``@observe(TimingMeter())`` vs the bare function (reported), and the time it adds per call
  vs one blinker ``Signal.send`` to one receiver (anchor 1b; goal: at most 2x).
* ``@observe(TimingMeter(), MetricsMeter(), CPUMeter())`` vs the bare function (reported).
* ``Observable.emit`` to one listener vs blinker ``Signal.send`` to one receiver (the anchor
  figure 1b; goal: at least 1x).
* ``LeastLoadedDispatcher`` choosing among 4 vs a bare call (reported).
* publish + deliver to one handler on a MessageQueue whose transport is instrumented with
  Prometheus metrics, or traced with the OpenTelemetry SDK, vs a plain queue (reported).

Every figure is the median of interleaved rounds.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import row as shared_row
from eventforge import Observable, observe
from eventforge.dispatch import LeastLoadedDispatcher
from eventforge_observers import CPUMeter, MetricsMeter, TimingMeter


def work(x: int) -> int:
    return x * 2


def rate(n: int, fn: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def medians(rounds: int, n: int, pairs: dict[str, Callable[[int], Any]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in pairs}
    for _ in range(rounds):
        for key, fn in pairs.items():
            samples[key].append(rate(n, fn))
    return {k: statistics.median(v) for k, v in samples.items()}


def row(
    scenario: str,
    ours: float,
    anchor: str,
    anchor_value: float,
    goal: str,
    unit: str = "calls/s",
    higher_is_better: bool = True,
) -> dict[str, Any]:
    return shared_row(scenario, ours, anchor, anchor_value, unit, goal, higher_is_better)


def _publish(queue: Any, i: int) -> None:
    queue.publish("bench.topic", i)


def _queues() -> dict[str, Any]:
    """A plain queue and, when the extras are installed, instrumented ones (one handler each)."""
    from eventforge import MessageQueue

    queues: dict[str, Any] = {"publish_plain": MessageQueue()}
    try:
        from eventforge_observers.prometheus import PrometheusMetrics
        from prometheus_client import CollectorRegistry

        queues["publish_metrics"] = PrometheusMetrics(CollectorRegistry()).queue()
    except ImportError:
        pass
    try:
        from eventforge_observers.otel import Tracing
        from opentelemetry.sdk.trace import TracerProvider

        tracing = Tracing(tracer_provider=TracerProvider())
        queues["publish_traced"] = MessageQueue(transport=tracing.instrument())
    except ImportError:
        pass
    for queue in queues.values():
        queue.subscribe("bench.*", lambda message: None)
    return queues


def _otel_sdk_alone() -> Callable[[int], Any] | None:
    """The OpenTelemetry SDK's own work for the spans a traced publish + delivery makes.

    What an application tracing by hand would write: a PRODUCER span with the same attributes,
    ``traceparent`` injected into a header dict, extracted on the receiving side, and a CONSUMER
    span (child of the extracted context) around a no-op handler. The ratio of the traced queue
    to this shows eventforge's own overhead on top of the SDK's.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    tracer = trace.get_tracer("bench", tracer_provider=TracerProvider())
    propagator = TraceContextTextMapPropagator()
    producer, consumer = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER

    def attributes(operation: str, i: int) -> dict[str, Any]:
        return {
            "messaging.system": "eventforge",
            "messaging.destination.name": "bench.topic",
            "messaging.message.id": str(i),
            "messaging.operation": operation,
            "eventforge.transport": "memory",
        }

    def traced_by_hand(i: int) -> None:
        headers: dict[str, Any] = {}
        with tracer.start_as_current_span(
            "bench.topic publish", kind=producer, attributes=attributes("publish", i)
        ):
            propagator.inject(headers)
            parent = propagator.extract(headers)
            with tracer.start_as_current_span(
                "bench.* process",
                context=parent,
                kind=consumer,
                attributes=attributes("process", i),
            ):
                pass

    return traced_by_hand


def _task_timed() -> Callable[[int], Any] | None:
    try:
        from eventforge import task
    except ImportError:
        return None
    return task(on_execute=[TimingMeter()])(work)  # type: ignore[no-any-return]


def run(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 200_000
    rounds = 1 if quick else 5
    timed = observe(TimingMeter())(work)
    stacked = observe(TimingMeter(), MetricsMeter(), CPUMeter())(work)

    source = Observable()
    source.add_listener(lambda event, payload: None, "tick")

    def emit(i: int) -> None:
        source.emit("tick", i)

    least = LeastLoadedDispatcher()
    members = [work, work, work, work]

    def choose(i: int) -> None:
        least.dispatch(members, lambda member: member(i))

    pairs: dict[str, Callable[[int], Any]] = {
        "bare": work,
        "observe_timing": timed,
        "observe_three": stacked,
        "emit": emit,
        "least_loaded": choose,
    }
    task_timed = _task_timed()
    if task_timed is not None:
        pairs["task_timing"] = task_timed
    try:
        import blinker

        signal = blinker.Signal()

        def receiver(sender: Any, **kw: Any) -> None:
            return None

        signal.connect(receiver)

        def blinker_send(i: int) -> None:
            signal.send(i)

        pairs["blinker"] = blinker_send
    except ImportError:
        pass

    sdk_alone = _otel_sdk_alone()
    if sdk_alone is not None:
        pairs["otel_sdk"] = sdk_alone
    queues = _queues()
    for key, queue in queues.items():
        pairs[key] = functools.partial(_publish, queue)

    try:
        got = medians(rounds, n, pairs)
    finally:
        for queue in queues.values():
            queue.close()
    bare = got["bare"]
    rows = []
    if "task_timing" in got:
        rows.append(
            row(
                "@task(on_execute=[TimingMeter()]) call",
                got["task_timing"],
                "bare call",
                bare,
                "report",
            )
        )
    rows += [
        row("@observe(TimingMeter()) call", got["observe_timing"], "bare call", bare, "report"),
        row(
            "@observe(Timing, Metrics, CPU) call", got["observe_three"], "bare call", bare, "report"
        ),
        row("LeastLoadedDispatcher of 4 + call", got["least_loaded"], "bare call", bare, "report"),
    ]
    if "publish_metrics" in got:
        rows.append(
            row(
                "publish+deliver, Prometheus-instrumented",
                got["publish_metrics"],
                "plain MessageQueue",
                got["publish_plain"],
                "report",
            )
        )
    if "publish_traced" in got:
        rows.append(
            row(
                "publish+deliver, traced (SDK, no exporter)",
                got["publish_traced"],
                "plain MessageQueue",
                got["publish_plain"],
                "report",
            )
        )
    if "publish_traced" in got and "otel_sdk" in got:
        rows.append(
            row(
                "publish+deliver, traced (SDK, no exporter)",
                got["publish_traced"],
                "the same two spans with the OTel SDK alone (inject + extract)",
                got["otel_sdk"],
                ">= 0.67x (ours <= 1.5x the SDK's time)",
            )
        )
    if "blinker" in got:
        blinker_us = 1e6 / got["blinker"]
        added_us = max(1e6 / got["observe_timing"] - 1e6 / bare, 1e-3)
        rows += [
            row(
                "TimingMeter: added time per observed call",
                added_us,
                "blinker send -> 1 (per call)",
                blinker_us,
                "<= 2x",
                unit="us",
                higher_is_better=False,
            ),
            row(
                "Observable.emit -> 1 listener",
                got["emit"],
                "blinker send -> 1",
                got["blinker"],
                ">= 1x",
            ),
        ]
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(
            f"{r['scenario']:<42} {r['eventforge']:>14,.0f} vs {r['anchor']:<18} "
            f"{r['anchor_value']:>14,.0f}  ratio {r['ratio']:.3f}  goal {r['goal']}"
        )
