"""How a MessageQueue calls user handlers: inline, on an event loop, or on a worker thread.

Every handler is wrapped once, at subscribe time, into an *invoker*: a one-argument callable
that the transport calls with each message. The invoker isolates the handler (an exception is
reported, never raised into the transport) and counts what happened. Building the wrapper once
keeps the per-message cost of the common case (a plain function, called inline) to one extra
call frame.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from eventforge.deadlines import expired as _expired
from eventforge.dispatch._dispatchers import Dispatcher
from eventforge.message import Message
from eventforge.transport import Counter, background_loop, nonblocking

__all__ = [
    "Counter",
    "ErrorReporter",
    "GroupBinding",
    "Invoker",
    "Worker",
    "delivering_for",
    "is_coroutine_handler",
    "make_invoker",
]

log = logging.getLogger("eventforge.queue")

Invoker = Callable[[Message], None]
ErrorReporter = Callable[[BaseException, Message, Callable[..., Any]], None]


def is_coroutine_handler(handler: Callable[..., Any]) -> bool:
    """Tell whether calling ``handler`` returns a coroutine (``async def`` or async ``__call__``)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)


class LoopRunner:
    """Schedules coroutines of one subscription on one event loop and keeps them referenced."""

    __slots__ = ("_tasks", "loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int | None) -> None:
        self.loop = loop
        self.thread_id = thread_id
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_caller(cls) -> LoopRunner:
        """Use the loop running in the calling thread, else the shared background loop."""
        return cls.running() or cls.background()

    @classmethod
    def running(cls) -> LoopRunner | None:
        """The loop running in the calling thread, if any."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(loop, threading.get_ident())

    @classmethod
    def background(cls) -> LoopRunner:
        """The shared background loop (started on first use)."""
        bg = background_loop()
        return cls(bg.loop, bg.thread.ident)

    def schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the loop; raises ``RuntimeError`` when the loop is closed."""
        if threading.get_ident() == self.thread_id:
            self._start(coro)
        else:
            self.loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every coroutine scheduled so far finished; ``False`` after ``timeout``.

        Call it from another thread than the loop's (from the loop's own thread it returns
        ``False`` at once: waiting there would deadlock).
        """
        if threading.get_ident() == self.thread_id or self.loop.is_closed():
            return not self._tasks

        async def settle() -> None:
            # Callbacks queued before this coroutine (tasks being started) run before it does.
            while self._tasks:
                await asyncio.wait(set(self._tasks))

        try:
            future = asyncio.run_coroutine_threadsafe(settle(), self.loop)
        except RuntimeError:  # the loop closed meanwhile
            return not self._tasks
        try:
            future.result(max(0.0, timeout))
        except TimeoutError:
            future.cancel()
            return False
        return True


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
    """
    bump = delivered.bump
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

        return invoke_marked

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

    return invoke


class Worker:
    """A private thread with a bounded backlog, for a handler that must not delay publishers.

    ``submit`` never blocks: when ``max_pending`` messages are waiting, the new one is dropped
    and counted. Stopping discards the backlog (counted as dropped) and does not wait for a
    handler that is stuck. The backlog is a :class:`queue.SimpleQueue`: a hand-over costs a
    C-level put, not a condition variable's Python-level dance.
    """

    def __init__(
        self,
        invoke: Invoker,
        max_pending: int,
        name: str,
        dropped: Counter,
        on_discard: Invoker | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._invoke = invoke
        self._on_discard = on_discard
        self.max_pending = max_pending
        self._dropped = dropped
        self._items: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._stopped = False
        self._warned = False
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Messages waiting for the handler."""
        return 0 if self._stopped else self._items.qsize()

    def load(self) -> int:
        """Messages accepted and not yet handled: the backlog plus the one being handled."""
        return self.pending + self._busy

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    @nonblocking
    def submit(self, message: Message) -> None:
        """Queue ``message`` for the handler, or drop and count it when the backlog is full.

        Never waits, so a transport may call it from its I/O thread (see
        :func:`~eventforge.transport.nonblocking`); a discarded message goes to ``on_discard``
        on the calling thread. The bound is exact for one submitting thread and may be passed
        by one message per extra thread submitting at the same instant.
        """
        items = self._items
        if not self._stopped and items.qsize() < self.max_pending:
            items.put(message)
            if self.stopped:
                # stop() ran between the check and the put: discard what it did not see.
                self._drain()
            return
        stopped = self._stopped
        self._discard(message)
        if not self._warned and not stopped:
            self._warned = True
            log.warning(
                "handler backlog on %s is full (%d messages): dropping new messages; raise "
                "max_pending or make the handler faster (drops are counted in stats['dropped'])",
                self._thread.name,
                self.max_pending,
            )

    def _run(self) -> None:
        get = self._items.get
        invoke = self._invoke
        while True:
            message = get()
            if self._stopped or message is None:
                if message is not None:
                    self._discard(message)
                return
            self._busy = 1
            try:
                invoke(message)
            finally:
                self._busy = 0

    def _drain(self) -> None:
        """Discard every queued message (after a stop); keep the thread's stop mark queued."""
        stop_mark = False
        while True:
            try:
                message = self._items.get_nowait()
            except queue.Empty:
                break
            if message is None:
                stop_mark = True
            else:
                self._discard(message)
        if stop_mark:
            self._items.put(None)

    def _discard(self, message: Message) -> None:
        """Count a message that will never be handled, and tell ``on_discard`` about it."""
        self._dropped.bump()
        if self._on_discard is not None:
            try:
                self._on_discard(message)
            except Exception:
                log.exception("on_discard callback failed for a message on %r", message.topic)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; discard (count, and pass to ``on_discard``) what is still queued."""
        self._stopped = True
        self._drain()
        self._items.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class GroupMember:
    """One member of a group: its handler id, how to invoke it, and its load.

    ``load()`` is what a load-aware dispatcher (``least_loaded``) adds to the calls it sees in
    flight: for a member with its own thread, the messages handed over but not yet handled.
    """

    __slots__ = ("handler_id", "invoke", "worker")

    def __init__(self, handler_id: str, invoke: Invoker, worker: Worker | None) -> None:
        self.handler_id = handler_id
        self.invoke = invoke
        self.worker = worker

    def load(self) -> int:
        return self.worker.load() if self.worker is not None else 0


class GroupBinding:
    """The local members of one ``(pattern, group)``: each message goes to one of them.

    The queue subscribes the binding once at the transport (with ``group=`` when the transport
    declares groups, so the transport picks one queue among many); the binding's dispatcher
    then picks one local member.

    A binding whose members only hand messages off (each has a thread of its own, or is a
    coroutine handler scheduled on its loop), picked by a dispatcher that never waits, is
    *non-blocking*: the queue subscribes :meth:`handoff` instead of :meth:`deliver`, so a
    transport may run it on its I/O thread. A plain member joining later is given a thread
    of its own by the queue, so that it never runs there.
    """

    __slots__ = (
        "dispatcher",
        "dropped",
        "group",
        "members",
        "nonblocking",
        "owns_dispatcher",
        "pattern",
        "subscription_id",
    )

    def __init__(
        self,
        pattern: str,
        group: str,
        dispatcher: Dispatcher,
        dropped: Counter,
        *,
        nonblocking: bool = False,
    ) -> None:
        self.pattern = pattern
        self.group = group
        self.dispatcher = dispatcher
        self.dropped = dropped
        self.nonblocking = nonblocking and dispatcher.nonblocking
        self.members: tuple[GroupMember, ...] = ()
        self.subscription_id: str | None = None
        self.owns_dispatcher = True

    @property
    def entry_point(self) -> Invoker:
        """What the queue subscribes at the transport: :meth:`handoff` or :meth:`deliver`."""
        return self.handoff if self.nonblocking else self.deliver

    def close(self) -> None:
        """Release the dispatcher when the binding made it (a name was given, not an instance)."""
        if self.owns_dispatcher:
            try:
                self.dispatcher.close()
            except Exception:
                log.exception(
                    "closing dispatcher %r of group %r failed", self.dispatcher, self.group
                )

    def add(self, handler_id: str, invoke: Invoker, worker: Worker | None = None) -> None:
        """Add a member (copy-on-write, so delivery never takes a lock)."""
        self.members = (*self.members, GroupMember(handler_id, invoke, worker))

    def remove(self, handler_id: str) -> bool:
        """Remove a member; return whether it was one."""
        before = self.members
        self.members = tuple(m for m in before if m.handler_id != handler_id)
        return len(self.members) != len(before)

    def deliver(self, message: Message) -> None:
        """Hand ``message`` to the member the dispatcher picks (the transport calls this)."""
        members: Sequence[GroupMember] = self.members
        if not members:
            self.dropped.bump()
            log.warning(
                "message on %r arrived for group %r, which has no members left; dropped",
                message.topic,
                self.group,
            )
            return
        try:
            self.dispatcher.dispatch(members, lambda member: member.invoke(message))
        except Exception:
            self.dropped.bump()
            log.exception("dispatcher %r failed for group %r", self.dispatcher.name, self.group)

    @nonblocking
    def handoff(self, message: Message) -> None:
        """:meth:`deliver` for a non-blocking binding (every member hands off to its thread)."""
        self.deliver(message)
