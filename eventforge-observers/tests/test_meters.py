"""Meters: the seed's observer snippets, every reduction, thresholds, and thread safety."""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from typing import Any

import eventforge
import pytest
from eventforge import CallEvent, Observer, observe
from eventforge_observers import (
    REDUCTIONS,
    CPUMeter,
    LoggingReporter,
    MemoryMeter,
    Meter,
    MetricsMeter,
    TimingMeter,
)


def test_seed_observer_snippet_with_task_runs_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("eventforge.tasks")
    from eventforge import MetricsMeter, TimingMeter, observe, task

    timing = TimingMeter(threshold=1.0)  # alert if > 1s
    metrics = MetricsMeter()

    @task(on_execute=[timing, metrics])
    def my_task(x):  # type: ignore[no-untyped-def]
        return x * 2

    my_task(21)
    my_task(42)
    print(timing.stats)  # {'count': 2, 'avg': ..., 'min': ..., 'max': ...}
    print(metrics.stats)  # {'calls': 2, 'successes': 2, 'failures': 0}

    @observe(timing, metrics)
    def simple_function(x):  # type: ignore[no-untyped-def]
        return x + 1

    assert simple_function(1) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("{'count': 2, 'avg': ")
    assert "'min': " in out[0]
    assert "'max': " in out[0]
    assert out[1] == "{'calls': 2, 'successes': 2, 'failures': 0}"
    assert metrics.stats == {"calls": 3, "successes": 3, "failures": 0}


def test_seed_observer_snippet_with_observe() -> None:
    from eventforge import MetricsMeter, TimingMeter, observe

    timing = TimingMeter(threshold=1.0)
    metrics = MetricsMeter()

    @observe(timing, metrics)
    def simple_function(x: int) -> int:
        return x + 1

    assert simple_function(1) == 2
    assert simple_function(2) == 3
    stats = timing.stats
    assert list(stats)[:4] == ["count", "avg", "min", "max"]
    assert stats["count"] == 2
    assert 0 <= stats["min"] <= stats["avg"] <= stats["max"]
    assert metrics.stats == {"calls": 2, "successes": 2, "failures": 0}


def test_meters_resolve_from_eventforge_through_the_registry() -> None:
    import eventforge_observers.meters as meters
    import eventforge_observers.reporting as reporting

    assert eventforge.TimingMeter is meters.TimingMeter
    assert eventforge.MetricsMeter is meters.MetricsMeter
    assert eventforge.MemoryMeter is meters.MemoryMeter
    assert eventforge.CPUMeter is meters.CPUMeter
    assert eventforge.Meter is meters.Meter
    assert eventforge.LoggingReporter is reporting.LoggingReporter


EXPECTED = {"mean": 2.0, "max": 3.0, "min": 1.0, "sum": 6.0, "last": 2.0, "count": 3}


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_each_reduction(reduction: str) -> None:
    meter = Meter(reduction=reduction)
    for value in (3.0, 1.0, 2.0):
        meter.record(value)
    assert meter.value == EXPECTED[reduction]
    assert meter.stats == {"value": EXPECTED[reduction], "count": 3}


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_meter(reduction: str) -> None:
    expected = 0 if reduction in ("sum", "count") else None
    assert Meter(reduction=reduction).stats == {"value": expected, "count": 0}


def test_unknown_reduction_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown reduction 'median'.*mean, max, min, sum, last, count"
    ):
        Meter(reduction="median")


def test_subclasses_choose_a_default_reduction_that_users_override() -> None:
    assert TimingMeter().reduction == "mean"
    assert MemoryMeter().reduction == "max"
    assert CPUMeter().reduction == "mean"
    timing = TimingMeter(reduction="max")
    timing.record(1.0)
    timing.record(5.0)
    assert timing.value == 5.0
    assert timing.stats["avg"] == 3.0


def test_reset_forgets_observations() -> None:
    meter = Meter(reduction="sum")
    meter.record(4)
    meter.reset()
    assert meter.stats == {"value": 0, "count": 0}


def test_meters_implement_the_observer_protocol() -> None:
    for meter in (TimingMeter(), MemoryMeter(), CPUMeter(), MetricsMeter(), LoggingReporter()):
        assert isinstance(meter, Observer)


def test_timing_threshold_fires_the_callback_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    alerts: list[CallEvent] = []
    timing = TimingMeter(threshold=0.001, on_threshold=alerts.append)

    @observe(timing)
    def slow() -> str:
        time.sleep(0.05)  # far longer than the threshold
        return "done"

    with caplog.at_level(logging.WARNING, logger="eventforge.observers"):
        assert slow() == "done"
    assert len(alerts) == 1
    assert alerts[0].name.endswith("slow")
    assert alerts[0].elapsed > 0.001
    assert timing.alerts == 1
    assert "over the" in caplog.text
    assert "threshold" in caplog.text


def test_timing_threshold_stays_quiet_for_quick_calls() -> None:
    alerts: list[CallEvent] = []
    timing = TimingMeter(threshold=60.0, on_threshold=alerts.append)
    observe(timing)(lambda: None)()
    assert alerts == []
    assert timing.alerts == 0
    assert timing.stats["count"] == 1


def test_failing_on_threshold_callback_never_breaks_the_call() -> None:
    def bad(event: CallEvent) -> None:
        raise RuntimeError("callback bug")

    timing = TimingMeter(threshold=0.0, on_threshold=bad)

    @observe(timing)
    def f() -> int:
        time.sleep(0.001)
        return 1

    assert f() == 1
    assert timing.alerts == 1


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        TimingMeter(threshold=-1)


def test_timing_counts_failed_calls_too() -> None:
    timing = TimingMeter()

    @observe(timing)
    def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        broken()
    assert timing.stats["count"] == 1


def test_metrics_meter_counts_failures_and_extracts_numbers() -> None:
    metrics = MetricsMeter(extractor=lambda result: result["items"], reduction="sum")

    @observe(metrics)
    def work(n: int) -> dict[str, int]:
        if n < 0:
            raise ValueError("negative")
        return {"items": n}

    work(3)
    work(4)
    with pytest.raises(ValueError):
        work(-1)
    assert metrics.stats == {"calls": 3, "successes": 2, "failures": 1, "value": 7.0, "count": 2}


def test_metrics_extractor_errors_are_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    metrics = MetricsMeter(extractor=lambda result: result["missing"])
    assert observe(metrics)(lambda: {"other": 1})() == {"other": 1}
    not_a_number = MetricsMeter(extractor=lambda result: "seven")
    observe(not_a_number)(lambda: 7)()
    assert metrics.extract_errors == 1
    assert not_a_number.extract_errors == 1
    assert metrics.stats == {"calls": 1, "successes": 1, "failures": 0, "value": None, "count": 0}


def test_memory_meter_with_tracemalloc_sees_the_allocation() -> None:
    meter = MemoryMeter()
    kept: list[bytes] = []

    @observe(meter)
    def allocate() -> None:
        kept.append(b"x" * 2_000_000)

    tracemalloc.start()
    try:
        allocate()
    finally:
        tracemalloc.stop()
    assert meter.count == 1
    assert meter.value >= 2_000_000


def test_memory_meter_without_tracemalloc_uses_rss() -> None:
    assert not tracemalloc.is_tracing()
    meter = MemoryMeter()
    kept: list[bytes] = []

    @observe(meter)
    def allocate() -> None:
        kept.append(b"y" * 64_000_000)  # written, so the pages become resident

    allocate()
    assert meter.count == 1
    assert meter.value > 16_000_000


def test_cpu_meter_measures_cpu_work() -> None:
    meter = CPUMeter()

    @observe(meter)
    def burn() -> int:
        start = time.process_time()
        total = 0
        while time.process_time() - start < 0.02:
            total += sum(range(1000))
        return total

    burn()
    assert meter.count == 1
    assert meter.value > 0


def test_meters_lose_no_counts_across_8_threads() -> None:
    timing, cpu = TimingMeter(), CPUMeter()
    metrics = MetricsMeter(extractor=lambda r: r, reduction="sum")
    plain = Meter(reduction="count")
    barrier = threading.Barrier(8, timeout=10)

    @observe(timing, cpu, metrics)
    def one() -> int:
        return 1

    def worker() -> None:
        barrier.wait()
        for _ in range(2000):
            one()
            plain.record(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert timing.stats["count"] == 16000
    assert cpu.count == 16000
    assert metrics.stats == {
        "calls": 16000,
        "successes": 16000,
        "failures": 0,
        "value": 16000.0,
        "count": 16000,
    }
    assert plain.value == 16000


def test_meters_emit_observations_to_listeners() -> None:
    meter = Meter(reduction="last", name="queue_depth")
    seen: list[tuple[str, Any]] = []
    meter.add_listener(lambda event, payload: seen.append((event, payload)))
    meter.record(5)
    assert seen == [("observation", {"meter": "queue_depth", "value": 5})]


def test_logging_reporter_logs_calls_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter = LoggingReporter("test.report")

    @observe(reporter)
    def ok() -> int:
        return 1

    @observe(reporter)
    def bad() -> None:
        raise ValueError("nope")

    with caplog.at_level(logging.INFO, logger="test.report"):
        ok()
        with pytest.raises(ValueError):
            bad()
    records = [r for r in caplog.records if r.name == "test.report"]
    assert [r.levelno for r in records] == [logging.INFO, logging.ERROR]
    fields = [r.eventforge for r in records]  # type: ignore[attr-defined]
    assert fields[0]["ok"] is True
    assert fields[0]["call"].endswith("ok")
    assert fields[1]["ok"] is False
    assert fields[1]["error"] == "ValueError"
    assert fields[1]["message"] == "nope"


def test_logging_reporter_watches_meter_emissions_and_reports_stats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timing = TimingMeter(threshold=0.0, name="slow_calls")
    reporter = LoggingReporter("test.meters", log_calls=False).watch(timing)

    @observe(timing, reporter)
    def f() -> None:
        time.sleep(0.001)

    with caplog.at_level(logging.INFO, logger="test.meters"):
        f()
        reporter.report([timing])
        reporter.unwatch(timing)
        f()
    fields = [r.eventforge for r in caplog.records if r.name == "test.meters"]  # type: ignore[attr-defined]
    kinds = [f["kind"] for f in fields]
    assert kinds == ["observation", "threshold", "stats"]
    assert fields[0]["meter"] == "slow_calls"
    assert fields[2]["count"] == 1
