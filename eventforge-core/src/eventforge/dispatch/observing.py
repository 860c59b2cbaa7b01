"""Observers: cross-cutting measurement of calls, without being part of their logic.

An observer is any object with ``before(event)``, ``after(event)`` and ``on_error(event)``
(:class:`Observer`); each receives the same :class:`CallEvent`, which carries the timing and
the result or the exception. ``@observe(*observers)`` wraps any function, sync or async;
``@task(on_execute=[...])`` uses the same machinery.

:class:`Observable` is the other half: something that emits named events (a meter's
observation, a threshold alert) to the listeners subscribed to it, through a dispatcher.
:class:`Eventful` is the protocol such emitters satisfy.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from eventforge.dispatch._dispatchers import Dispatcher, get_dispatcher

__all__ = [
    "CallEvent",
    "Eventful",
    "Listener",
    "Observable",
    "Observer",
    "call_observed",
    "call_observed_async",
    "observe",
]

log = logging.getLogger("eventforge.observing")

F = TypeVar("F", bound=Callable[..., Any])
Listener = Callable[[str, Any], Any]
"""A listener receives ``(event_name, payload)``."""


class CallEvent:
    """One observed call: what was called, when, how long it took, and how it ended.

    ``start`` / ``end`` are :func:`time.perf_counter` readings. ``start_cpu`` is the
    :func:`time.process_time` at the start, taken only when an observer of the call sets
    ``needs_cpu_time = True`` (reading the CPU clock costs about as much as the rest of the
    observation), else ``0.0``.
    """

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


def _wants_cpu(observers: Sequence[Any]) -> bool:
    for observer in observers:  # noqa: SIM110 - cheaper than any() with a generator, per call
        if getattr(observer, "needs_cpu_time", False):
            return True
    return False


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
    event = CallEvent(name or str(getattr(func, "__qualname__", repr(func))), args, kwargs)
    _notify(observers, "before", event)
    if _wants_cpu(observers):
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
    event = CallEvent(name or str(getattr(func, "__qualname__", repr(func))), args, kwargs)
    _notify(observers, "before", event)
    if _wants_cpu(observers):
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


@runtime_checkable
class Eventful(Protocol):
    """Anything that emits named events to listeners (:class:`Observable` is the standard one)."""

    def add_listener(self, listener: Listener, event: str | None = None) -> Listener: ...

    def remove_listener(self, listener: Listener, event: str | None = None) -> bool: ...

    def emit(self, event: str, payload: Any = None) -> int: ...


class Observable:
    """Emits named events to subscribed listeners through a dispatcher.

    Subclass it (meters do) or compose it. A listener is ``fn(event_name, payload)`` subscribed
    to one event name or, with ``event=None``, to every event. ``emit`` hands the listeners of
    an event to the dispatcher (``broadcast`` by default: all of them, in subscription order;
    ``concurrent`` runs them in parallel; ``round_robin`` / ``least_loaded`` pick one, which
    makes the listeners competing workers). A listener that raises never breaks the emitter or
    the other listeners: the error goes to ``on_error(event, listener, exc)`` (default: logged)
    and is counted in :attr:`listener_errors`. Emitting with no listener costs one dict lookup.
    """

    def __init__(
        self,
        dispatcher: str | Dispatcher = "broadcast",
        *,
        on_error: Callable[[str, Listener, Exception], None] | None = None,
    ) -> None:
        self._dispatcher_choice = dispatcher
        self._dispatcher: Dispatcher | None = None
        self._on_error = on_error
        self._listeners: dict[str | None, tuple[Listener, ...]] = {}
        self._listeners_lock = threading.Lock()
        self.listener_errors = 0

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher that delivers events to listeners (resolved on first use)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            dispatcher = self._dispatcher = get_dispatcher(self._dispatcher_choice)
        return dispatcher

    def add_listener(self, listener: Listener, event: str | None = None) -> Listener:
        """Subscribe ``listener`` to ``event`` (or to every event); return it (for decorators)."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable (got {type(listener).__name__})")
        with self._listeners_lock:
            self._listeners[event] = (*self._listeners.get(event, ()), listener)
        return listener

    def remove_listener(self, listener: Listener, event: str | None = None) -> bool:
        """Unsubscribe ``listener`` from ``event``; return whether it was subscribed."""
        with self._listeners_lock:
            current = self._listeners.get(event, ())
            kept = tuple(fn for fn in current if fn is not listener and fn != listener)
            if len(kept) == len(current):
                return False
            if kept:
                self._listeners[event] = kept
            else:
                del self._listeners[event]
            return True

    def on(self, event: str | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`add_listener`."""

        def decorate(func: F) -> F:
            self.add_listener(func, event)
            return func

        return decorate

    def listeners(self, event: str | None = None) -> list[Listener]:
        """The listeners an ``emit(event)`` reaches: the event's own, then the catch-all ones."""
        listeners = self._listeners
        if event is None:
            return list(listeners.get(None, ()))
        return [*listeners.get(event, ()), *listeners.get(None, ())]

    @property
    def has_listeners(self) -> bool:
        """True when at least one listener is subscribed (checked before building a payload)."""
        return bool(self._listeners)

    def emit(self, event: str, payload: Any = None) -> int:
        """Deliver ``(event, payload)`` to the event's listeners; return how many were targeted."""
        listeners = self._listeners
        if not listeners:
            return 0
        targets = (*listeners.get(event, ()), *listeners.get(None, ()))
        if not targets:
            return 0

        def invoke(listener: Listener) -> None:
            try:
                listener(event, payload)
            except Exception as exc:
                self._listener_failed(event, listener, exc)

        self.dispatcher.dispatch(targets, invoke)
        return 1 if self.dispatcher.selects_one else len(targets)

    def _listener_failed(self, event: str, listener: Listener, exc: Exception) -> None:
        with self._listeners_lock:
            self.listener_errors += 1
        if self._on_error is not None:
            self._on_error(event, listener, exc)
        else:
            log.error("listener %r of %r failed on event %r", listener, self, event, exc_info=exc)
