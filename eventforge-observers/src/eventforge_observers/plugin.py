"""Hook implementations of eventforge-observers: records only, nothing imported until chosen."""

from __future__ import annotations

from eventforge.hookspecs import hookimpl
from eventforge.plugins import ObserverSpec

__all__ = ["eventforge_observers"]


@hookimpl
def eventforge_observers() -> list[ObserverSpec]:
    return [
        ObserverSpec(
            name="meter",
            target="eventforge_observers.meters:Meter",
            summary="Base meter: observations reduced by mean/max/min/sum/last/count.",
            exports=("Meter",),
        ),
        ObserverSpec(
            name="timing",
            target="eventforge_observers.meters:TimingMeter",
            summary="Elapsed time per call (mean), with slow-call threshold alerts.",
            exports=("TimingMeter",),
        ),
        ObserverSpec(
            name="memory",
            target="eventforge_observers.meters:MemoryMeter",
            summary="Memory delta per call (max): tracemalloc when tracing, else RSS.",
            exports=("MemoryMeter",),
        ),
        ObserverSpec(
            name="cpu",
            target="eventforge_observers.meters:CPUMeter",
            summary="Process CPU time per call (mean).",
            exports=("CPUMeter",),
        ),
        ObserverSpec(
            name="metrics",
            target="eventforge_observers.meters:MetricsMeter",
            summary="Calls, successes, failures, and a number extracted from each result.",
            exports=("MetricsMeter",),
        ),
        ObserverSpec(
            name="logging",
            target="eventforge_observers.reporting:LoggingReporter",
            summary="Structured logging of calls and meter emissions.",
            exports=("LoggingReporter",),
        ),
        ObserverSpec(
            name="otel",
            target="eventforge_observers.otel:Tracing",
            summary="OpenTelemetry spans for publish/handle/RPC/task, traceparent in headers.",
            aliases=("opentelemetry", "tracing"),
            requires=("opentelemetry",),
            extra="otel",
        ),
        ObserverSpec(
            name="prometheus",
            target="eventforge_observers.prometheus:PrometheusMetrics",
            summary="Prometheus counters and histograms for messages, handlers and RPC.",
            requires=("prometheus_client",),
            extra="prometheus",
        ),
        ObserverSpec(
            name="logfire",
            target="eventforge_observers.logfire:LogfireObserver",
            summary="Pydantic Logfire spans for observed calls.",
            requires=("logfire",),
            extra="logfire",
        ),
    ]
