"""A Node: named handlers called through one dispatcher, and served over RPC on demand."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from eventforge.dispatch import Dispatcher, get_dispatcher
from eventforge.dispatch.observing import call_observed, call_observed_async
from eventforge.rpc._server import RPCServer
from eventforge.transport import run_sync

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Node"]

F = TypeVar("F", bound=Callable[..., Any])


class Node:
    """A named unit of work: handlers registered by name, called through a dispatcher.

    A node is what a worker process exposes. Locally, ``node.call(name, *args)`` runs the
    handler(s) registered under ``name`` through the node's observers and dispatcher; remotely,
    ``node.serve(queue)`` publishes every handler as an RPC method of the service ``node.name``.
    Several handlers may share one name (replicas of one operation): a single-target dispatcher
    (``round_robin``, ``least_loaded``) picks one and ``call`` returns its result; a fan-out
    dispatcher (``broadcast``, ``concurrent``) runs them all and ``call`` returns their results
    in registration order.
    """

    def __init__(
        self,
        name: str,
        dispatcher: str | Dispatcher = "round_robin",
        *,
        observers: Sequence[Any] = (),
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"a Node needs a non-empty name (got {name!r})")
        self.name = name
        self.dispatcher = get_dispatcher(dispatcher)
        self.observers: list[Any] = list(observers)
        self._handlers: dict[str, tuple[tuple[int, Callable[..., Any]], ...]] = {}
        self._lock = threading.Lock()
        self._servers: list[Any] = []

    # -- handlers --------------------------------------------------------------------------

    @overload
    def handler(self, name: F) -> F: ...

    @overload
    def handler(self, name: str | None = None) -> Callable[[F], F]: ...

    def handler(self, name: str | F | None = None) -> F | Callable[[F], F]:
        """Decorator registering a handler under ``name`` (default: the function's name)."""
        if callable(name):
            self.add_handler(name.__name__, name)
            return name

        def decorate(func: F) -> F:
            self.add_handler(name or func.__name__, func)
            return func

        return decorate

    def add_handler(self, name: str, func: Callable[..., Any]) -> None:
        """Register ``func`` under ``name``; a second handler for a name becomes a replica."""
        if not name or not isinstance(name, str):
            raise ValueError(f"handler name must be a non-empty string (got {name!r})")
        if not callable(func):
            raise TypeError(f"handler {name!r} must be callable (got {type(func).__name__})")
        with self._lock:
            current = self._handlers.get(name, ())
            # Targets are (position, handler) pairs created once, so that dispatchers that
            # track targets by identity (least_loaded) see the same object on every call.
            self._handlers[name] = (*current, (len(current), func))

    def remove_handler(self, name: str, func: Callable[..., Any] | None = None) -> int:
        """Remove ``func`` (or every handler) under ``name``; return how many were removed."""
        with self._lock:
            current = self._handlers.get(name, ())
            kept = [] if func is None else [h for _, h in current if h is not func]
            if kept:
                self._handlers[name] = tuple(enumerate(kept))
            else:
                self._handlers.pop(name, None)
            return len(current) - len(kept)

    @property
    def handlers(self) -> dict[str, tuple[Callable[..., Any], ...]]:
        """A snapshot of the handlers by name."""
        with self._lock:
            return {name: tuple(h for _, h in pairs) for name, pairs in self._handlers.items()}

    # -- calling ---------------------------------------------------------------------------

    def _targets(self, name: str) -> tuple[tuple[int, Callable[..., Any]], ...]:
        targets = self._handlers.get(name)
        if not targets:
            available = ", ".join(sorted(self._handlers)) or "(none)"
            raise LookupError(
                f"node {self.name!r} has no handler {name!r}. Registered: {available}. "
                "Add one with @node.handler(name) or node.add_handler(name, func)."
            )
        return targets

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run the handler(s) called ``name`` through the observers and the dispatcher.

        A coroutine handler is run to completion on eventforge's background loop; inside a
        coroutine, use :meth:`call_async` instead. Raises ``LookupError`` naming the
        registered handlers when ``name`` is unknown.
        """
        targets = self._targets(name)
        if self.observers:

            def run(*a: Any, **kw: Any) -> Any:
                return self._dispatch(targets, a, kw)

            result, _ = call_observed(self.observers, run, args, kwargs, name=f"{self.name}.{name}")
            return result
        return self._dispatch(targets, args, kwargs)

    def _dispatch(
        self,
        targets: tuple[tuple[int, Callable[..., Any]], ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        results: dict[int, Any] = {}

        def invoke(item: tuple[int, Callable[..., Any]]) -> None:
            value = item[1](*args, **kwargs)
            if inspect.isawaitable(value):
                value = run_sync(value)
            results[item[0]] = value

        self.dispatcher.dispatch(targets, invoke)
        if self.dispatcher.selects_one:
            return next(iter(results.values()), None)
        return [results.get(i) for i in range(len(targets))]

    async def call_async(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`call`, awaiting coroutine handlers on the running loop.

        The dispatcher chooses the handler(s) as for :meth:`call`; the chosen coroutines are
        awaited together. (``least_loaded`` counts a coroutine handler as busy only while it
        is being started, not while it is awaited.)
        """
        targets = self._targets(name)
        if self.observers:

            async def run(*a: Any, **kw: Any) -> Any:
                return await self._dispatch_async(targets, a, kw)

            result, _ = await call_observed_async(
                self.observers, run, args, kwargs, name=f"{self.name}.{name}"
            )
            return result
        return await self._dispatch_async(targets, args, kwargs)

    async def _dispatch_async(
        self,
        targets: tuple[tuple[int, Callable[..., Any]], ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        results: dict[int, Any] = {}
        pending: list[tuple[int, Awaitable[Any]]] = []

        def invoke(item: tuple[int, Callable[..., Any]]) -> None:
            value = item[1](*args, **kwargs)
            if inspect.isawaitable(value):
                pending.append((item[0], value))
            else:
                results[item[0]] = value

        self.dispatcher.dispatch(targets, invoke)
        if pending:
            values = await asyncio.gather(*(awaitable for _, awaitable in pending))
            for (index, _), value in zip(pending, values, strict=True):
                results[index] = value
        if self.dispatcher.selects_one:
            return next(iter(results.values()), None)
        return [results.get(i) for i in range(len(targets))]

    def _is_async(self, name: str) -> bool:
        return any(inspect.iscoroutinefunction(h) for _, h in self._handlers.get(name, ()))

    # -- exposing --------------------------------------------------------------------------

    def methods(self) -> dict[str, Callable[..., Any]]:
        """``{name: callable}`` for every handler name, each running through :meth:`call`.

        Names whose handlers are coroutines map to :meth:`call_async`. This is the shape an
        RPC server registers and the generic worker's ``HANDLERS`` expects, so a handler
        module can expose a node with ``HANDLERS = node.methods()``.
        """
        methods: dict[str, Callable[..., Any]] = {}
        for method in self.handlers:
            call = self.call_async if self._is_async(method) else self.call
            methods[method] = functools.partial(call, method)
        return methods

    def serve(self, queue: Any, *, service_name: str | None = None) -> Any:
        """Expose every handler as an RPC method of ``service_name`` (default: the node's name).

        Returns the started ``RPCServer`` (non-blocking); :meth:`stop` stops every server this
        node started. Calls arriving over RPC run through :meth:`call` (:meth:`call_async`
        for coroutine handlers, which the server awaits), so the node's dispatcher and
        observers apply to them too.
        """

        server = RPCServer(queue, service_name=service_name or self.name)
        for method, func in self.methods().items():
            server.add_method(method, func)
        server.serve(blocking=False)
        with self._lock:
            self._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop every RPC server started by :meth:`serve` and close the dispatcher."""
        with self._lock:
            servers, self._servers = self._servers, []
        for server in servers:
            server.stop()
        self.dispatcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Node({self.name!r}, dispatcher={self.dispatcher!r}, handlers={sorted(self._handlers)})"
