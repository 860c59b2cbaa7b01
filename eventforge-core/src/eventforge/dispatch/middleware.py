"""Middleware: ordered interceptors around what a MessageQueue sends and what its handlers get.

A middleware is an object with any of three methods (subclass :class:`Middleware` for the
defaults):

- ``on_send(message, send)``: called for every message the queue sends (publish, request,
  reply). Read or write ``message.headers``, then call ``send(message)`` (or a changed copy);
  not calling it drops the message on purpose; raising makes the publish raise.
- ``on_receive(message, handle)``: called for every message before a plain handler runs. Call
  ``handle(message)`` to run the handler (and the middleware after this one); not calling it
  skips the handler; code around the call wraps the handling (timing, a context variable).
- ``async on_receive_async(message, handle)``: the same for coroutine handlers; ``handle``
  returns an awaitable. The default runs ``on_receive`` first and then awaits the handler, so
  a middleware written for plain handlers (headers, checks, dedupe) also covers coroutines.

Order: with ``middleware=[a, b]`` the send side runs ``a`` then ``b`` then the transport; the
receive side runs ``b`` then ``a`` then the handler (a stack: the first middleware is the
outermost on the wire). An exception raised on the receive side is handled like the handler's
own: logged, counted in ``stats["handler_errors"]`` and passed to the error hook.

Middleware are resolved by name with :func:`resolve_middleware`: names added with
:func:`register_middleware`, names that plugins (the core included: ``"dedupe"``) register
through the ``eventforge_middleware`` hook (kind ``"middleware"`` of the plugin registry, listed
by ``eventforge plugins``), or ``"module:attr"`` targets. An unknown name raises
:class:`UnknownMiddlewareError` with the registry's did-you-mean and the installed names.
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from eventforge.errors import ConfigurationError, PluginNotFoundError
from eventforge.message import Message
from eventforge.plugins import registry

__all__ = [
    "ContextHeader",
    "Dedupe",
    "Middleware",
    "UnknownMiddlewareError",
    "compose_send",
    "register_middleware",
    "resolve_middleware",
    "wrap_handler",
]

Send = Callable[[Message], None]
Handle = Callable[[Message], Any]


class Middleware:
    """Base class: every hook passes the message on unchanged; override the ones you need."""

    def on_send(self, message: Message, send: Send) -> None:
        """Called for each outgoing message; call ``send(message)`` to pass it on."""
        send(message)

    def on_receive(self, message: Message, handle: Handle) -> Any:
        """Called before a plain handler runs; call ``handle(message)`` to run it."""
        return handle(message)

    async def on_receive_async(
        self, message: Message, handle: Callable[[Message], Awaitable[Any]]
    ) -> Any:
        """Called before a coroutine handler runs; await ``handle(message)`` to run it.

        The default runs :meth:`on_receive` (so its header work, checks and short-circuits
        apply) and then awaits the handler with the message it passed on.
        """
        passed: list[Message] = []
        self.on_receive(message, passed.append)
        if passed:
            return await handle(passed[0])
        return None


def _overrides(mw: object, name: str) -> bool:
    method = getattr(type(mw), name, None)
    return method is not None and method is not getattr(Middleware, name)


def compose_send(middleware: Sequence[object], send: Send) -> Send:
    """Chain the ``on_send`` hooks in list order in front of ``send``."""
    chained = send
    for mw in reversed(middleware):
        if _overrides(mw, "on_send"):
            chained = _bind_send(mw, chained)
    return chained


def _bind_send(mw: Any, nxt: Send) -> Send:
    hook = mw.on_send

    def send(message: Message) -> None:
        hook(message, nxt)

    return send


def wrap_handler(
    middleware: Sequence[object], handler: Callable[..., Any], is_async: bool
) -> Callable[..., Any]:
    """Return ``handler`` run behind the receive hooks (the last middleware outermost)."""
    wrapped = handler
    if is_async:
        for mw in middleware:
            if _overrides(mw, "on_receive_async") or _overrides(mw, "on_receive"):
                wrapped = _bind_receive_async(mw, wrapped)
    else:
        for mw in middleware:
            if _overrides(mw, "on_receive"):
                wrapped = _bind_receive(mw, wrapped)
    return wrapped


def _bind_receive(mw: Any, nxt: Handle) -> Handle:
    hook = mw.on_receive

    def handle(message: Message) -> Any:
        return hook(message, nxt)

    return handle


def _bind_receive_async(mw: Any, nxt: Callable[..., Any]) -> Callable[[Message], Any]:
    hook = getattr(mw, "on_receive_async", None)
    if hook is None:
        plain = mw.on_receive

        async def hook(message: Message, handle: Callable[[Message], Awaitable[Any]]) -> Any:
            passed: list[Message] = []
            plain(message, passed.append)
            return await handle(passed[0]) if passed else None

    async def handle(message: Message) -> Any:
        return await hook(message, _awaiting(nxt))

    return handle


def _awaiting(fn: Callable[..., Any]) -> Callable[[Message], Awaitable[Any]]:
    async def call(message: Message) -> Any:
        result = fn(message)
        if inspect.isawaitable(result):
            return await result
        return result

    return call


# -- ready-made middleware ---------------------------------------------------------------------


class ContextHeader(Middleware):
    """Carry a :class:`contextvars.ContextVar` from publisher to handler in a header.

    On send, the variable's current value (when set) goes into ``header``; on receive, the
    handler runs with the variable set to the header's value. The tenant or session id of the
    publishing request is then visible to the handler in another process.
    """

    def __init__(self, header: str, var: contextvars.ContextVar[Any]) -> None:
        if not isinstance(header, str) or not header:
            raise ValueError(f"header must be a non-empty str, got {header!r}")
        self.header = header
        self.var = var

    def on_send(self, message: Message, send: Send) -> None:
        value = self.var.get(None)
        if value is not None and self.header not in message.headers:
            message.headers = {**message.headers, self.header: value}
        send(message)

    def on_receive(self, message: Message, handle: Handle) -> Any:
        value = message.headers.get(self.header)
        if value is None:
            return handle(message)
        token = self.var.set(value)
        try:
            return handle(message)
        finally:
            self.var.reset(token)

    async def on_receive_async(
        self, message: Message, handle: Callable[[Message], Awaitable[Any]]
    ) -> Any:
        value = message.headers.get(self.header)
        if value is None:
            return await handle(message)
        token = self.var.set(value)
        try:
            return await handle(message)
        finally:
            self.var.reset(token)


class Dedupe(Middleware):
    """Skip a message whose id was handled recently (redeliveries, duplicate publishes).

    Remembers the last ``max_ids`` message ids per middleware instance; ``skipped`` counts the
    duplicates that never reached a handler.
    """

    def __init__(self, max_ids: int = 10_000) -> None:
        if max_ids < 1:
            raise ValueError(f"max_ids must be >= 1, got {max_ids}")
        self.max_ids = max_ids
        self.skipped = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def on_receive(self, message: Message, handle: Handle) -> Any:
        key = message.id
        with self._lock:
            if key in self._seen:
                self.skipped += 1
                return None
            self._seen[key] = None
            if len(self._seen) > self.max_ids:
                self._seen.popitem(last=False)
        return handle(message)


# -- by name -------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[[], object]] = {}


def register_middleware(name: str, factory: Callable[[], object]) -> None:
    """Make ``factory()`` selectable as ``name`` in ``MessageQueue(middleware=[...])``.

    Plugins register middleware through the ``eventforge_middleware`` hook instead.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a middleware name must be a non-empty str without ':', got {name!r}")
    if not callable(factory):
        raise TypeError(f"middleware factory for {name!r} must be callable")
    _REGISTRY[name] = factory


def _instantiate(value: object) -> object:
    return value() if isinstance(value, type) or inspect.isfunction(value) else value


def _from_target(target: str) -> object:
    module, _, attr = target.partition(":")
    try:
        value = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"middleware {target!r} could not be loaded ({exc}); use 'module:attribute' naming "
            "a Middleware class, factory or instance",
            key="middleware",
        ) from None
    return _instantiate(value)


class UnknownMiddlewareError(ConfigurationError, PluginNotFoundError):
    """No middleware of that name: neither registered in code nor by an installed plugin.

    Both a :class:`ConfigurationError` (``key="middleware"``) and the registry's
    :class:`PluginNotFoundError` (``kind``, ``name``, ``installed``, ``suggestions``).
    """

    def __init__(self, message: str, *, found: PluginNotFoundError) -> None:
        PluginNotFoundError.__init__(
            self,
            message,
            kind="middleware",
            name=found.name,
            installed=found.installed,
            suggestions=found.suggestions,
            install_hint=found.install_hint,
        )
        self.key = "middleware"


def _by_name(name: str) -> object:
    if name in _REGISTRY:
        return _REGISTRY[name]()

    reg = registry()
    try:
        entry = reg.get("middleware", name)
    except PluginNotFoundError as exc:
        raise _unknown(name, exc) from None
    return _instantiate(reg.load(entry))


def _unknown(name: str, found: PluginNotFoundError) -> UnknownMiddlewareError:
    """The registry's teaching error, completed with the names registered in code."""
    text = str(found).removesuffix(" Run `eventforge plugins` for details.")
    parts = [text]
    if _REGISTRY:
        if not found.suggestions:
            close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
            if close:
                parts.append("Did you mean " + " or ".join(f"'{c}'" for c in close) + "?")
        parts.append(f"Registered in code: {', '.join(sorted(_REGISTRY))}.")
    parts.append(
        "Add one with register_middleware(name, factory) or a plugin's eventforge_middleware "
        "hook, or pass 'module:attr'. Run `eventforge plugins --kind middleware` for details."
    )
    return UnknownMiddlewareError(" ".join(parts), found=found)


def resolve_middleware(items: Iterable[object] | None) -> list[object]:
    """Turn names, ``"module:attr"`` targets and instances into middleware instances."""
    resolved: list[object] = []
    for item in items or ():
        if isinstance(item, str):
            obj = _from_target(item) if ":" in item else _by_name(item)
        else:
            obj = item
        if not any(
            callable(getattr(obj, name, None))
            for name in ("on_send", "on_receive", "on_receive_async")
        ):
            raise TypeError(
                f"{obj!r} is not a middleware: it needs on_send, on_receive or on_receive_async "
                "(subclass eventforge.Middleware)"
            )
        resolved.append(obj)
    return resolved
