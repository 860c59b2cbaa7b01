"""The observer protocol, @observe on sync and async functions, and Observable emitters."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from eventforge import CallEvent, Eventful, Observable, Observer, observe
from eventforge.dispatch import ConcurrentDispatcher


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def before(self, event: CallEvent) -> None:
        self.calls.append(("before", event.name, None))

    def after(self, event: CallEvent) -> None:
        assert event.end >= event.start
        self.calls.append(("after", event.name, event.result))

    def on_error(self, event: CallEvent) -> None:
        self.calls.append(("on_error", event.name, type(event.error).__name__))


def test_observe_reports_before_and_after_with_the_result() -> None:
    recorder = Recorder()

    @observe(recorder)
    def double(x: int) -> int:
        return x * 2

    assert double(21) == 42
    assert double.__name__ == "double"
    name = double.__qualname__
    assert recorder.calls == [("before", name, None), ("after", name, 42)]
    assert isinstance(recorder, Observer)


def test_observe_reports_errors_and_reraises() -> None:
    recorder = Recorder()

    @observe([recorder])
    def broken() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        broken()
    assert [c[0] for c in recorder.calls] == ["before", "on_error"]
    assert recorder.calls[1][2] == "ValueError"


def test_observe_wraps_coroutines() -> None:
    recorder = Recorder()

    @observe(recorder)
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert asyncio.run(add(1, 2)) == 3
    assert [c[0] for c in recorder.calls] == ["before", "after"]
    assert recorder.calls[1][2] == 3


def test_a_raising_observer_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def before(self, event: CallEvent) -> None:
            raise RuntimeError("observer bug")

    recorder = Recorder()

    @observe(Broken(), recorder)
    def f() -> str:
        return "ok"

    assert f() == "ok"
    assert [c[0] for c in recorder.calls] == ["before", "after"]
    assert "observer bug" in caplog.text


def test_observable_delivers_to_event_and_catch_all_listeners_in_order() -> None:
    source = Observable()
    seen: list[tuple[str, str, Any]] = []
    source.add_listener(lambda e, p: seen.append(("one", e, p)), "tick")
    source.add_listener(lambda e, p: seen.append(("all", e, p)))

    @source.on("tick")
    def two(event: str, payload: Any) -> None:
        seen.append(("two", event, payload))

    assert source.emit("tick", 1) == 3
    assert source.emit("tock", 2) == 1
    assert seen == [
        ("one", "tick", 1),
        ("two", "tick", 1),
        ("all", "tick", 1),
        ("all", "tock", 2),
    ]
    assert isinstance(source, Eventful)


def test_observable_without_listeners_emits_to_nobody() -> None:
    source = Observable()
    assert not source.has_listeners
    assert source.emit("anything", {"x": 1}) == 0


def test_remove_listener() -> None:
    source = Observable()
    seen: list[Any] = []

    def listener(event: str, payload: Any) -> None:
        seen.append(payload)

    source.add_listener(listener, "e")
    assert source.remove_listener(listener, "e") is True
    assert source.remove_listener(listener, "e") is False
    source.emit("e", 1)
    assert seen == []


def test_a_failing_listener_is_counted_and_the_others_still_run() -> None:
    errors: list[tuple[str, str]] = []
    source = Observable(on_error=lambda event, listener, exc: errors.append((event, str(exc))))
    seen: list[Any] = []

    def bad(event: str, payload: Any) -> None:
        raise RuntimeError("listener bug")

    source.add_listener(bad, "e")
    source.add_listener(lambda e, p: seen.append(p), "e")
    assert source.emit("e", 7) == 2
    assert seen == [7]
    assert errors == [("e", "listener bug")]
    assert source.listener_errors == 1


def test_a_single_target_dispatcher_makes_listeners_compete() -> None:
    source = Observable(dispatcher="round_robin")
    seen: list[str] = []
    source.add_listener(lambda e, p: seen.append("a"), "job")
    source.add_listener(lambda e, p: seen.append("b"), "job")
    for _ in range(4):
        assert source.emit("job") == 1
    assert sorted(seen) == ["a", "a", "b", "b"]


def test_a_concurrent_dispatcher_runs_listeners_in_parallel() -> None:
    barrier = threading.Barrier(3, timeout=10)
    dispatcher = ConcurrentDispatcher(max_workers=3)
    source = Observable(dispatcher=dispatcher)
    for _ in range(3):
        source.add_listener(lambda e, p: barrier.wait(), "go")
    try:
        assert source.emit("go") == 3
    finally:
        dispatcher.close()
    assert not barrier.broken
    assert source.listener_errors == 0


def test_add_listener_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        Observable().add_listener("not a function")  # type: ignore[arg-type]


def test_cpu_clock_is_read_only_for_observers_that_ask() -> None:
    seen: list[float] = []

    class Plain:
        def after(self, event: CallEvent) -> None:
            seen.append(event.start_cpu)

    class WantsCpu(Plain):
        needs_cpu_time = True

    observe(Plain())(lambda: None)()
    observe(WantsCpu())(lambda: None)()
    assert seen[0] == 0.0
    assert seen[1] > 0.0
