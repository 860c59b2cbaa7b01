"""Observers: cross-cutting measurement of calls, without being part of their logic.

An observer is any object with ``before(event)``, ``after(event)`` and ``on_error(event)``
(:class:`Observer`); each receives the same :class:`CallEvent`, which carries the timing and
the result or the exception. ``@observe(*observers)`` wraps any function, sync or async;
``@task(on_execute=[...])`` uses the same machinery.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

__all__ = ["CallEvent", "Observer", "call_observed", "call_observed_async", "observe"]

log = logging.getLogger("eventforge.observe")

F = TypeVar("F", bound=Callable[..., Any])


class CallEvent:
    """One observed call: what was called, when, how long it took, and how it ended."""

    __slots__ = (
        "args",
        "context",
        "end",
        "error",
        "kwargs",
        "name",
        "result",
        "start",
        "start_cpu",
    )

    def __init__(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.start = 0.0
        self.start_cpu = 0.0
        self.end = 0.0
        self.result: Any = None
        self.error: BaseException | None = None
        self.context: dict[str, Any] = {}

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds from ``before`` to ``after``/``on_error``."""
        return self.end - self.start

    @property
    def succeeded(self) -> bool:
        """True when the call returned instead of raising."""
        return self.error is None

    def __repr__(self) -> str:
        outcome = "ok" if self.error is None else f"error={type(self.error).__name__}"
        return f"CallEvent({self.name!r}, elapsed={self.elapsed:.6f}, {outcome})"


@runtime_checkable
class Observer(Protocol):
    """What an observer implements. Each hook must be cheap and must not raise."""

    def before(self, event: CallEvent) -> None: ...

    def after(self, event: CallEvent) -> None: ...

    def on_error(self, event: CallEvent) -> None: ...


def _notify(observers: Sequence[Any], hook: str, event: CallEvent) -> None:
    for observer in observers:
        method = getattr(observer, hook, None)
        if method is None:
            continue
        try:
            method(event)
        except Exception:
            # An observer must never break the observed call.
            log.exception("observer %r raised in %s() for %s", observer, hook, event.name)


def call_observed(
    observers: Sequence[Any],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str | None = None,
) -> tuple[Any, CallEvent]:
    """Call ``func`` between the observers' hooks; return ``(result, event)`` or re-raise."""
    event = CallEvent(name or getattr(func, "__qualname__", repr(func)), args, kwargs)
    _notify(observers, "before", event)
    event.start_cpu = time.process_time()
    event.start = time.perf_counter()
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        event.end = time.perf_counter()
        event.error = exc
        _notify(observers, "on_error", event)
        raise
    event.end = time.perf_counter()
    event.result = result
    _notify(observers, "after", event)
    return result, event


async def call_observed_async(
    observers: Sequence[Any],
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str | None = None,
) -> tuple[Any, CallEvent]:
    """The coroutine twin of :func:`call_observed`."""
    event = CallEvent(name or getattr(func, "__qualname__", repr(func)), args, kwargs)
    _notify(observers, "before", event)
    event.start_cpu = time.process_time()
    event.start = time.perf_counter()
    try:
        result = await func(*args, **kwargs)
    except BaseException as exc:
        event.end = time.perf_counter()
        event.error = exc
        _notify(observers, "on_error", event)
        raise
    event.end = time.perf_counter()
    event.result = result
    _notify(observers, "after", event)
    return result, event


def observe(*observers: Any) -> Callable[[F], F]:
    """Decorate a function (sync or ``async def``) so every call is reported to ``observers``."""
    chosen: tuple[Any, ...] = tuple(_flatten(observers))

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                result, _ = await call_observed_async(chosen, func, args, kwargs)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result, _ = call_observed(chosen, func, args, kwargs)
            return result

        return cast(F, wrapper)

    return decorate


def _flatten(items: Iterable[Any]) -> Iterable[Any]:
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item
