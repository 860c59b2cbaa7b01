"""How a MessageQueue calls user handlers: inline, on an event loop, or on a handler thread.

Every handler is wrapped once, at subscribe time, into an *invoker*: a one-argument callable
that the transport calls with each message. The invoker isolates the handler (an exception is
reported, never raised into the transport) and counts what happened. Building the wrapper once
keeps the per-message cost of the common case (a plain function, called inline) to one extra
call frame.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from eventforge.deadlines import expired as _expired
from eventforge.dispatch._loop_runner import LoopRunner
from eventforge.message import Message
from eventforge.transport import Counter, is_nonblocking, nonblocking

__all__ = [
    "ErrorReporter",
    "Invoker",
    "delivering_for",
    "is_coroutine_handler",
    "make_invoker",
]

Invoker = Callable[[Message], None]
ErrorReporter = Callable[[BaseException, Message, Callable[..., Any]], None]


def is_coroutine_handler(handler: Callable[..., Any]) -> bool:
    """Tell whether calling ``handler`` returns a coroutine (``async def`` or async ``__call__``)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)


_delivery = threading.local()


def delivering_for() -> object | None:
    """The mark of the inline delivery running in this thread (see ``make_invoker``), if any."""
    return getattr(_delivery, "mark", None)


def make_invoker(
    handler: Callable[..., Any],
    *,
    report_error: ErrorReporter,
    delivered: Counter,
    dropped: Counter,
    delivery_mark: object | None = None,
    expired: Counter | None = None,
) -> Invoker:
    """Wrap ``handler`` into an isolated invoker, once, at subscribe time.

    Plain functions run inline in the calling thread. Coroutine functions are scheduled on the
    loop that was running when they subscribed, else on the shared background loop; the caller
    never waits for them. A plain function that returns an awaitable gets the same treatment
    for its result.

    With ``delivery_mark``, a plain handler runs with that mark visible to
    :func:`delivering_for` in its thread, so that code it calls can tell it is running on a
    transport's delivery thread (where waiting for another message of that transport would
    wait forever).

    With ``expired``, a request whose deadline has passed (see :mod:`eventforge.deadlines`) is
    not passed to the handler but counted there: its caller has stopped waiting.

    A plain handler marked :func:`~eventforge.transport.nonblocking` gives a marked invoker,
    so a transport declaring ``nonblocking_inline`` runs it on its I/O thread or event loop.
    """
    bump = delivered.bump
    inline = is_nonblocking(handler)
    skip = expired.bump if expired is not None else None
    is_async = is_coroutine_handler(handler)
    runner = LoopRunner.running()
    if is_async and runner is None:
        runner = LoopRunner.background()
    runner_box: list[LoopRunner | None] = [runner]

    async def _await(awaitable: Awaitable[Any], message: Message) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            report_error(exc, message, handler)

    def _schedule(awaitable: Awaitable[Any], message: Message) -> None:
        loop_runner = runner_box[0]
        if loop_runner is None:
            loop_runner = runner_box[0] = LoopRunner.background()
        coro = _await(awaitable, message)
        try:
            loop_runner.schedule(coro)
        except RuntimeError as exc:
            # The loop this handler was bound to has closed: the message cannot be handled.
            coro.close()
            dropped.bump()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            report_error(exc, message, handler)

    if is_async:
        # Calling a coroutine function only creates the coroutine, and scheduling it never
        # waits: a transport may run this from its I/O thread or loop (one hand-off less).

        @nonblocking
        def invoke_async(message: Message) -> None:
            if skip is not None and message.reply_to is not None and _expired(message):
                skip()
                return
            bump()
            try:
                awaitable = handler(message)
            except Exception as exc:
                report_error(exc, message, handler)
                return
            _schedule(awaitable, message)

        return invoke_async

    if delivery_mark is not None:
        state = _delivery

        def invoke_marked(message: Message) -> None:
            if skip is not None and message.reply_to is not None and _expired(message):
                skip()
                return
            bump()
            outer = getattr(state, "mark", None)
            state.mark = delivery_mark
            try:
                result = handler(message)
            except Exception as exc:
                report_error(exc, message, handler)
                return
            finally:
                state.mark = outer
            if result is not None and inspect.isawaitable(result):
                _schedule(result, message)

        return nonblocking(invoke_marked) if inline else invoke_marked

    def invoke(message: Message) -> None:
        if skip is not None and message.reply_to is not None and _expired(message):
            skip()
            return
        bump()
        try:
            result = handler(message)
        except Exception as exc:
            report_error(exc, message, handler)
            return
        if result is not None and inspect.isawaitable(result):
            _schedule(result, message)

    return nonblocking(invoke) if inline else invoke
