"""Dispatchers: who, among several handlers, receives an event.

A dispatcher gets the candidate targets and an ``invoke(target)`` callable and decides which
target(s) to invoke and how: all of them (broadcast), the next one in turn (round-robin), the
one with the fewest calls in flight (least-loaded), or all of them in parallel (concurrent).
MessageQueue groups and RPC server pools pick their member through a dispatcher chosen by name
(:func:`get_dispatcher`); :class:`eventforge.rpc.Node` owns named handlers and calls them through one.
"""

from __future__ import annotations

import builtins
import itertools
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from eventforge.plugins import load_named

if TYPE_CHECKING:
    from types import TracebackType


__all__ = [
    "BroadcastDispatcher",
    "ConcurrentDispatcher",
    "DispatchError",
    "Dispatcher",
    "LeastLoadedDispatcher",
    "RoundRobinDispatcher",
    "get_dispatcher",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D", bound="Dispatcher")

# ExceptionGroup on Python 3.11+, a plain Exception before.
_GroupBase: type[Exception] = getattr(builtins, "ExceptionGroup", Exception)


class DispatchError(_GroupBase):  # type: ignore[valid-type,misc]
    """One or more targets of a fan-out dispatch raised; the others still ran.

    On Python 3.11+ this is an :class:`ExceptionGroup`, so ``except* ValueError`` works.
    ``errors`` lists the exceptions in target order, on every Python version.
    """

    if sys.version_info >= (3, 11):

        def derive(self, excs: Sequence[Exception]) -> DispatchError:
            return DispatchError(self.message, excs)

    def __init__(self, message: str, errors: Sequence[Exception]) -> None:
        super().__init__(message, list(errors))
        self.errors: list[Exception] = list(errors)

    def __str__(self) -> str:
        return f"{self.args[0]} ({len(self.errors)} failed)"


class Dispatcher(ABC):
    """Chooses the target(s) of one event. Implementations must be thread-safe."""

    name: ClassVar[str] = "dispatcher"
    selects_one: ClassVar[bool] = True
    """True when exactly one target receives each event (usable for competing consumers)."""
    nonblocking: ClassVar[bool] = False
    """True when :meth:`dispatch` itself never waits (it only calls ``invoke``): with targets
    that hand work to threads of their own, a dispatch then returns at once, so a transport may
    run it on its I/O thread."""

    @abstractmethod
    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        """Deliver one event by calling ``invoke(target)`` for the chosen target(s).

        Exceptions raised by ``invoke`` propagate to the caller (the caller isolates handlers).
        Fan-out dispatchers run every chosen target, then raise :class:`DispatchError`.
        """

    def close(self) -> None:
        """Release resources (threads); the dispatcher must not be used afterwards."""

    def __enter__(self: D) -> D:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BroadcastDispatcher(Dispatcher):
    """Every target receives the event, one after the other, in order.

    A target that raises does not stop the others. With ``on_error`` given, it is called as
    ``on_error(target, exc)`` for each failure and nothing is raised; without it the failures
    are collected and raised together as a :class:`DispatchError` after the last target ran.
    """

    name = "broadcast"
    selects_one = False
    nonblocking = True

    def __init__(self, on_error: Callable[[Any, Exception], None] | None = None) -> None:
        self.on_error = on_error

    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        errors: list[Exception] = []
        for target in targets:
            try:
                invoke(target)
            except Exception as exc:
                if self.on_error is None:
                    errors.append(exc)
                else:
                    self.on_error(target, exc)
        if errors:
            raise DispatchError("broadcast: some targets raised", errors)


class RoundRobinDispatcher(Dispatcher):
    """Each event goes to the next target in turn (the default for groups and pools)."""

    name = "round_robin"
    nonblocking = True

    def __init__(self) -> None:
        self._turn = itertools.count()

    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        if targets:
            # next() on itertools.count is atomic under the GIL: the turn never repeats.
            invoke(targets[next(self._turn) % len(targets)])


class ConcurrentDispatcher(Dispatcher):
    """Every target receives the event, in parallel on a thread pool; returns when all are done.

    Use it when targets block on I/O. Failures are collected into a :class:`DispatchError`
    (or passed to ``on_error(target, exc)``). A dispatch made from one of the pool's own threads
    runs inline, so nested fan-out cannot deadlock a saturated pool.
    """

    name = "concurrent"
    selects_one = False

    def __init__(
        self,
        max_workers: int | None = None,
        on_error: Callable[[Any, Exception], None] | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1 (got {max_workers})")
        self.max_workers = max_workers
        self.on_error = on_error
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("ConcurrentDispatcher is closed; create a new one")
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.max_workers,
                        thread_name_prefix="eventforge-dispatch",
                        initializer=self._mark_worker,
                    )
                pool = self._pool
        return pool

    def _mark_worker(self) -> None:
        self._local.worker = True

    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        if len(targets) <= 1 or getattr(self._local, "worker", False):
            BroadcastDispatcher(self.on_error).dispatch(targets, invoke)
            return
        pool = self._executor()
        futures: list[Future[Any]] = [pool.submit(invoke, target) for target in targets]
        errors: list[Exception] = []
        for target, future in zip(targets, futures, strict=True):
            exc = future.exception()
            if exc is None:
                continue
            if not isinstance(exc, Exception):  # pragma: no cover - BaseException in a worker
                raise exc
            if self.on_error is None:
                errors.append(exc)
            else:
                self.on_error(target, exc)
        if errors:
            raise DispatchError("concurrent: some targets raised", errors)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ConcurrentDispatcher(max_workers={self.max_workers})"


class LeastLoadedDispatcher(Dispatcher):
    """Each event goes to the target with the fewest calls in flight; ties go round-robin.

    Counts are kept per target (by identity) and updated under a lock, so a target that is
    busy with a slow call is passed over while an idle one exists. A target that hands work to
    a thread of its own (so ``invoke`` returns at once) may define ``load() -> int``, the work
    it accepted and has not finished; that is added to its count.
    """

    name = "least_loaded"
    nonblocking = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}
        self._turn = 0

    def _load(self, target: Any) -> int:
        backlog = getattr(target, "load", None)
        return self._inflight.get(id(target), 0) + (backlog() if callable(backlog) else 0)

    def in_flight(self, target: Any) -> int:
        """How many calls ``target`` is currently running through this dispatcher."""
        with self._lock:
            return self._inflight.get(id(target), 0)

    def dispatch(self, targets: Sequence[T], invoke: Callable[[T], Any]) -> None:
        n = len(targets)
        if n == 0:
            return
        with self._lock:
            start = self._turn % n
            self._turn += 1
            best_index = start
            best_load = self._load(targets[start])
            if best_load:
                for step in range(1, n):
                    index = (start + step) % n
                    load = self._load(targets[index])
                    if load < best_load:
                        best_index, best_load = index, load
                        if load == 0:
                            break
            chosen = targets[best_index]
            key = id(chosen)
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            invoke(chosen)
        finally:
            with self._lock:
                remaining = self._inflight[key] - 1
                if remaining:
                    self._inflight[key] = remaining
                else:
                    del self._inflight[key]


_BUILTIN: dict[str, type[Dispatcher]] = {"round_robin": RoundRobinDispatcher}
_lock = threading.Lock()


def get_dispatcher(
    name_or_instance: str | Dispatcher | type[Dispatcher] | None = None, **options: Any
) -> Dispatcher:
    """Return a new dispatcher by registry name (default ``round_robin``), or the instance given.

    Names come from the ``eventforge_dispatchers`` hook: ``broadcast``, ``round_robin``,
    ``concurrent``, ``least_loaded`` (and their aliases) in core, plus any plugin's. ``options``
    go to the dispatcher's constructor (``get_dispatcher("concurrent", max_workers=8)``).
    Call it when configuring, not per message.
    """
    if isinstance(name_or_instance, Dispatcher):
        if options:
            raise TypeError("options cannot be given together with a Dispatcher instance")
        return name_or_instance
    if isinstance(name_or_instance, type):
        factory: Callable[..., Any] = name_or_instance
    else:
        name = name_or_instance or "round_robin"
        builtin = _BUILTIN.get(name)
        if builtin is not None:
            factory = builtin
        else:
            with _lock:
                factory = load_named("dispatcher", name)
    dispatcher = factory(**options)
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(
            f"dispatcher {name_or_instance!r} produced {type(dispatcher).__name__}, not a Dispatcher"
        )
    return dispatcher
