"""Dispatchers: each one's distribution property, error isolation, and selection by name."""

from __future__ import annotations

import builtins
import sys
import threading
from collections import Counter

import pytest
from eventforge.dispatch import (
    BroadcastDispatcher,
    ConcurrentDispatcher,
    Dispatcher,
    DispatchError,
    LeastLoadedDispatcher,
    RoundRobinDispatcher,
    get_dispatcher,
)
from eventforge.errors import PluginNotFoundError

WAIT = 10.0  # generous bound for events/barriers; never an assertion about time


def test_broadcast_reaches_every_target_in_order() -> None:
    seen: list[str] = []
    BroadcastDispatcher().dispatch(["a", "b", "c"], seen.append)
    assert seen == ["a", "b", "c"]
    assert BroadcastDispatcher.selects_one is False


def test_broadcast_runs_the_others_when_one_raises_then_raises_a_group() -> None:
    seen: list[str] = []

    def invoke(target: str) -> None:
        seen.append(target)
        if target in ("a", "c"):
            raise ValueError(target)

    with pytest.raises(DispatchError) as info:
        BroadcastDispatcher().dispatch(["a", "b", "c", "d"], invoke)
    assert seen == ["a", "b", "c", "d"]
    assert [str(e) for e in info.value.errors] == ["a", "c"]
    if sys.version_info >= (3, 11):
        assert isinstance(info.value, builtins.ExceptionGroup)  # type: ignore[attr-defined]
        assert [str(e) for e in info.value.exceptions] == ["a", "c"]


def test_broadcast_with_error_callback_raises_nothing() -> None:
    failures: list[tuple[str, str]] = []

    def invoke(target: str) -> None:
        if target == "b":
            raise RuntimeError("boom")

    dispatcher = BroadcastDispatcher(on_error=lambda t, exc: failures.append((t, str(exc))))
    dispatcher.dispatch(["a", "b", "c"], invoke)
    assert failures == [("b", "boom")]


def test_round_robin_is_even() -> None:
    counts: Counter[str] = Counter()
    dispatcher = RoundRobinDispatcher()
    for _ in range(300):
        dispatcher.dispatch(["a", "b", "c"], counts.update)
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_round_robin_is_even_across_threads() -> None:
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    dispatcher = RoundRobinDispatcher()

    def record(target: str) -> None:
        with lock:
            counts[target] += 1

    def worker() -> None:
        for _ in range(250):
            dispatcher.dispatch(["a", "b", "c", "d"], record)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {"a": 500, "b": 500, "c": 500, "d": 500}


def test_concurrent_runs_targets_in_parallel() -> None:
    parties = 4
    barrier = threading.Barrier(parties, timeout=WAIT)
    threads: set[str] = set()
    lock = threading.Lock()

    def invoke(target: int) -> None:
        barrier.wait()  # only passes if all four run at the same time
        with lock:
            threads.add(threading.current_thread().name)

    dispatcher = ConcurrentDispatcher(max_workers=parties)
    try:
        dispatcher.dispatch(list(range(parties)), invoke)
    finally:
        dispatcher.close()
    assert len(threads) == parties
    assert not barrier.broken
    assert ConcurrentDispatcher.selects_one is False


def test_concurrent_collects_failures_after_all_ran() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def invoke(target: int) -> None:
        with lock:
            done.append(target)
        if target % 2:
            raise KeyError(target)

    with ConcurrentDispatcher(max_workers=2) as dispatcher:
        with pytest.raises(DispatchError) as info:
            dispatcher.dispatch([0, 1, 2, 3], invoke)
    assert sorted(done) == [0, 1, 2, 3]
    assert sorted(e.args[0] for e in info.value.errors) == [1, 3]


def test_concurrent_nested_dispatch_does_not_deadlock_a_full_pool() -> None:
    dispatcher = ConcurrentDispatcher(max_workers=2)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def inner(outer: int) -> None:
        def record(t: int) -> None:
            with lock:
                seen.append((outer, t))

        dispatcher.dispatch([0, 1, 2], record)

    try:
        dispatcher.dispatch([0, 1], inner)
    finally:
        dispatcher.close()
    assert sorted(seen) == [(o, t) for o in range(2) for t in range(3)]


def test_concurrent_refuses_bad_pool_size_and_use_after_close() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        ConcurrentDispatcher(max_workers=0)
    dispatcher = ConcurrentDispatcher(max_workers=1)
    dispatcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.dispatch([1, 2], lambda t: None)


def test_least_loaded_prefers_the_idle_member_while_one_is_blocked() -> None:
    dispatcher = LeastLoadedDispatcher()
    members = ["slow", "fast"]
    release = threading.Event()
    entered = threading.Event()
    chosen: list[str] = []
    lock = threading.Lock()

    def invoke(member: str) -> None:
        with lock:
            chosen.append(member)
        if len(chosen) == 1:
            entered.set()
            assert release.wait(WAIT)

    blocker = threading.Thread(target=dispatcher.dispatch, args=(members, invoke))
    blocker.start()
    assert entered.wait(WAIT)
    blocked = chosen[0]
    assert dispatcher.in_flight(blocked) == 1
    for _ in range(10):
        dispatcher.dispatch(members, invoke)
    release.set()
    blocker.join(WAIT)
    idle = next(m for m in members if m != blocked)
    assert chosen[1:] == [idle] * 10
    assert dispatcher.in_flight(blocked) == 0


def test_least_loaded_ties_go_round_robin() -> None:
    counts: Counter[str] = Counter()
    dispatcher = LeastLoadedDispatcher()
    for _ in range(90):
        dispatcher.dispatch(["a", "b", "c"], counts.update)
    assert counts == {"a": 30, "b": 30, "c": 30}


def test_least_loaded_releases_the_slot_when_the_target_raises() -> None:
    dispatcher = LeastLoadedDispatcher()

    def invoke(member: str) -> None:
        raise OSError(member)

    with pytest.raises(OSError):
        dispatcher.dispatch(["a"], invoke)
    assert dispatcher.in_flight("a") == 0


def test_empty_target_lists_are_a_no_op() -> None:
    for name in ("broadcast", "round_robin", "concurrent", "least_loaded"):
        get_dispatcher(name).dispatch([], lambda t: pytest.fail("called"))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("broadcast", BroadcastDispatcher),
        ("round_robin", RoundRobinDispatcher),
        ("round-robin", RoundRobinDispatcher),
        ("concurrent", ConcurrentDispatcher),
        ("least_loaded", LeastLoadedDispatcher),
        ("least-loaded", LeastLoadedDispatcher),
    ],
)
def test_get_dispatcher_by_name_returns_a_fresh_instance(name: str, cls: type) -> None:
    first, second = get_dispatcher(name), get_dispatcher(name)
    assert type(first) is cls
    assert first is not second


def test_get_dispatcher_passes_options_and_instances_through() -> None:
    dispatcher = get_dispatcher("concurrent", max_workers=3)
    assert isinstance(dispatcher, ConcurrentDispatcher)
    assert dispatcher.max_workers == 3
    assert get_dispatcher(dispatcher) is dispatcher
    assert isinstance(get_dispatcher(None), RoundRobinDispatcher)
    assert isinstance(get_dispatcher(LeastLoadedDispatcher), LeastLoadedDispatcher)


def test_unknown_dispatcher_name_teaches() -> None:
    with pytest.raises(PluginNotFoundError) as info:
        get_dispatcher("least_loade")
    message = str(info.value)
    assert "least_loaded" in message
    assert "Installed:" in message
    assert info.value.kind == "dispatcher"


def test_a_custom_dispatcher_is_just_a_subclass() -> None:
    class Last(Dispatcher):
        def dispatch(self, targets, invoke):  # type: ignore[no-untyped-def]
            if targets:
                invoke(targets[-1])

    seen: list[str] = []
    get_dispatcher(Last).dispatch(["a", "b"], seen.append)
    assert seen == ["b"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* needs Python 3.11")
def test_except_star_splits_a_dispatch_error() -> None:
    code = """
from eventforge.dispatch import BroadcastDispatcher, DispatchError

def invoke(target):
    raise (KeyError if target == "k" else ValueError)(target)

caught = []
try:
    BroadcastDispatcher().dispatch(["k", "v", "w"], invoke)
except* KeyError as group:
    caught.append(("key", type(group).__name__, len(group.exceptions)))
except* ValueError as group:
    caught.append(("value", type(group).__name__, len(group.exceptions)))
assert caught == [("key", "DispatchError", 1), ("value", "DispatchError", 2)], caught
"""
    exec(compile(code, "<except-star>", "exec"), {})
