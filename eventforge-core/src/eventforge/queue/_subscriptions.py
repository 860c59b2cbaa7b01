"""The subscriptions part of a :class:`~eventforge.queue.MessageQueue`.

:class:`Subscriptions` turns ``subscribe`` options into a chain of small steps (typed events
and middleware, the invoker, an optional thread of its own, a header gate, then a plain,
durable or group subscription on the transport) and keeps what it needs to undo each one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventforge.dispatch import (
    Dispatcher,
    GroupBinding,
    HandlerThread,
    Invoker,
    get_dispatcher,
    is_coroutine_handler,
    make_invoker,
)
from eventforge.dispatch.middleware import wrap_handler
from eventforge.events import typed_subscription
from eventforge.message import Message
from eventforge.queue._core import QueueCore
from eventforge.queue._routing import check_match, header_gate
from eventforge.topics import has_wildcards, validate_pattern
from eventforge.transport import (
    Capability,
    SubscriptionStatus,
    is_nonblocking,
    nonblocking,
    require_capability,
)

__all__ = ["DEFAULT_MAX_PENDING", "HandlerStatus", "Subscriptions"]

log = logging.getLogger("eventforge.queue")

DEFAULT_MAX_PENDING = 10_000

Handler = Callable[[Message], Any]


@dataclass(frozen=True)
class HandlerStatus:
    """One subscription of a queue as it stands now (:meth:`MessageQueue.subscription_status`).

    ``transport``: what the transport tells about it (``None``: the transport cannot tell).
    For a handler on a thread of its own (``threaded=True``, ``max_pending``): ``pending``,
    the messages waiting for it; ``handled``, the messages it finished so far (a count that
    stops moving while the handler is stuck); ``thread_alive``. They are ``None`` otherwise.
    """

    transport: SubscriptionStatus | None
    pending: int | None = None
    handled: int | None = None
    thread_alive: bool | None = None


class _Entry:
    """What :meth:`Subscriptions.remove` needs to undo one subscription."""

    __slots__ = ("binding", "handler", "subscription_id", "thread", "topic")

    def __init__(
        self,
        topic: str,
        handler: Handler,
        subscription_id: str | None,
        binding: GroupBinding | None,
        thread: HandlerThread | None,
    ) -> None:
        self.topic = topic
        self.handler = handler
        self.subscription_id = subscription_id
        self.binding = binding
        self.thread = thread


def _dispatcher_name(dispatcher: str | Dispatcher | type[Dispatcher]) -> str:
    if isinstance(dispatcher, (Dispatcher, type)):
        return dispatcher.name
    resolved = get_dispatcher(dispatcher)
    resolved.close()
    return resolved.name


class Subscriptions:
    """The handlers of one queue: plain, durable and group subscriptions on its transport."""

    def __init__(self, core: QueueCore) -> None:
        self.core = core
        self.entries: dict[str, _Entry] = {}
        self.groups: dict[tuple[str, str], GroupBinding] = {}
        self._ids = itertools.count(1)

    def add(
        self,
        topic: str | type,
        handler: Callable[..., Any],
        *,
        group: str | None,
        durable: str | None,
        dispatcher: str | Dispatcher | None,
        threaded: bool,
        max_pending: int | None,
        match: dict[str, Any] | None,
        match_mode: str,
        on_discard: Callable[[Message], Any] | None,
    ) -> str:
        """Subscribe ``handler`` (see :meth:`MessageQueue.subscribe`); return its handler id."""
        core = self.core
        core.check_open()
        transport = core.transport
        if durable is not None:
            require_capability(
                transport, Capability.DURABLE_SUBSCRIPTIONS, feature="subscribe(durable=...)"
            )
            if not isinstance(durable, str) or not durable:
                raise ValueError(f"durable must be a non-empty str, got {durable!r}")
        if not callable(handler):
            raise TypeError(
                f"handler must be callable (a function or coroutine function taking the message), "
                f"got {type(handler).__name__}"
            )
        topic, wrapped = self._prepare(topic, handler)
        validate_pattern(topic)
        if match is not None:
            check_match(match, match_mode)
        if has_wildcards(topic):
            require_capability(transport, Capability.WILDCARDS, feature=f"pattern {topic!r}")
        if dispatcher is not None and group is None:
            raise ValueError(
                "dispatcher= chooses a member of a group; pass group='name' too (without a "
                "group every handler receives every message)"
            )
        handler_id = f"{core.name}.h{next(self._ids)}"
        use_thread = threaded or max_pending is not None
        invoke = make_invoker(
            wrapped,
            report_error=self._reporter(handler, wrapped),
            delivered=core.delivered,
            dropped=core.dropped,
            expired=core.expired,
            # Network transports call handlers on their own reader thread: mark it, so that
            # a blocking request made there is reported instead of silently timing out.
            delivery_mark=None if use_thread or core.inline_async else transport,
        )
        thread: HandlerThread | None = None
        entry_point: Invoker = invoke
        if use_thread:
            thread = self._thread(invoke, handler_id, max_pending, on_discard)
            entry_point = thread.submit
        if match is not None:
            gate = header_gate(match, match_mode, entry_point, core.filtered.bump)
            entry_point = nonblocking(gate) if is_nonblocking(entry_point) else gate
        try:
            if group is None:
                if match is not None and durable is None and core.header_match:
                    # The broker filters too; the gate above stays as the backstop.
                    subscription_id = transport.subscribe_matching(
                        topic, entry_point, match=dict(match), match_mode=match_mode
                    )
                elif durable is None:
                    subscription_id = transport.subscribe(topic, entry_point)
                else:
                    subscription_id = transport.subscribe_durable(
                        topic, entry_point, durable=durable
                    )
                entry = _Entry(topic, handler, subscription_id, None, thread)
            else:
                binding, thread = self._join_group(
                    topic, group, dispatcher, handler_id, entry_point, thread, on_discard, durable
                )
                entry = _Entry(topic, handler, None, binding, thread)
        except BaseException:
            if thread is not None:
                thread.stop()
            raise
        with core.lock:
            closed = core.closed
            if not closed:
                self.entries[handler_id] = entry
        if closed:
            # The queue closed while this subscription was being made: it never saw the entry.
            if entry.binding is not None:
                entry.binding.remove(handler_id)  # closing released the binding itself
            self._release(entry, entry.subscription_id)
            raise core.closed_error("while subscribing")
        return handler_id

    def remove(
        self, handler_id: str, drain: float | None = None, discard_waiting: bool = False
    ) -> bool:
        """Undo one subscription; return whether it existed (``drain``: see
        :meth:`MessageQueue.unsubscribe`)."""
        with self.core.lock:
            entry = self.entries.pop(handler_id, None)
            if entry is None:
                return False
            binding = entry.binding
            transport_sub: str | None = entry.subscription_id
            if binding is not None:
                binding.remove(handler_id)
                transport_sub = None
                if (
                    not binding.members
                    and self.groups.get((binding.pattern, binding.group)) is binding
                ):
                    del self.groups[(binding.pattern, binding.group)]
                    transport_sub = binding.subscription_id
                else:
                    binding = None
        self._release(entry, transport_sub, drain, discard_waiting)
        if binding is not None:
            binding.close()
        return True

    def status(self, handler_id: str, ask_transport: bool = True) -> HandlerStatus | None:
        """What the queue, the handler's thread and the transport know about one subscription;
        ``None`` when the queue has no such handler (any more)."""
        with self.core.lock:
            entry = self.entries.get(handler_id)
        if entry is None:
            return None
        sub_id = entry.subscription_id
        if entry.binding is not None:
            sub_id = entry.binding.subscription_id
        transport = None
        if sub_id is not None and ask_transport:
            transport = self.core.transport.subscription_status(sub_id)
        thread = entry.thread
        if thread is None:
            return HandlerStatus(transport)
        return HandlerStatus(transport, thread.pending, thread.handled, thread.alive)

    def close(self) -> None:
        """Undo every subscription (the queue is closing; call with the closed flag set)."""
        with self.core.lock:
            entries = list(self.entries.values())
            self.entries.clear()
            groups = list(self.groups.values())
            self.groups.clear()
        for entry in entries:
            self._release(entry, entry.subscription_id)
        for binding in groups:
            if binding.subscription_id is not None:
                self.core.unsubscribe_transport(binding.subscription_id)
            binding.close()

    # -- the steps ----------------------------------------------------------------------------

    def _prepare(
        self, topic: str | type, handler: Callable[..., Any]
    ) -> tuple[str, Callable[..., Any]]:
        """Resolve an event-class topic and wrap the handler (events, middleware) once."""
        topic, wrapped = typed_subscription(topic, handler)
        middleware = self.core.middleware
        if middleware:
            wrapped = wrap_handler(middleware, wrapped, is_coroutine_handler(wrapped))
        return topic, wrapped

    def _reporter(
        self, handler: Callable[..., Any], wrapped: Callable[..., Any]
    ) -> Callable[[BaseException, Message, Callable[..., Any]], None]:
        """Report errors under the user's handler, not the wrapper that middleware made."""
        report = self.core.report_error
        if wrapped is handler:
            return report

        def report_original(exc: BaseException, message: Message, _: Callable[..., Any]) -> None:
            report(exc, message, handler)

        return report_original

    def _thread(
        self,
        invoke: Invoker,
        handler_id: str,
        max_pending: int | None,
        on_discard: Callable[[Message], Any] | None,
    ) -> HandlerThread:
        return HandlerThread(
            invoke,
            max_pending if max_pending is not None else DEFAULT_MAX_PENDING,
            f"eventforge-{handler_id}",
            self.core.dropped,
            on_discard,
        )

    def _join_group(
        self,
        topic: str,
        group: str,
        dispatcher: str | Dispatcher | None,
        handler_id: str,
        invoke: Invoker,
        thread: HandlerThread | None = None,
        on_discard: Callable[[Message], Any] | None = None,
        durable: str | None = None,
    ) -> tuple[GroupBinding, HandlerThread | None]:
        """Add a member to the group's binding (made and subscribed on first use).

        Returns the binding and the member's thread: a plain member joining a group whose
        binding the transport runs on its I/O thread gets a thread of its own here, so that
        it never runs there (members may join in any order).
        """
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty str, got {group!r}")
        core = self.core
        key = (topic, group)
        with core.lock:
            core.check_open()
            binding = self.groups.get(key)
            if binding is not None:
                if dispatcher is not None and _dispatcher_name(dispatcher) != (
                    binding.dispatcher.name
                ):
                    raise ValueError(
                        f"group {group!r} on {topic!r} already uses the "
                        f"{binding.dispatcher.name!r} dispatcher; every member of a group "
                        "must use the same one"
                    )
                if binding.nonblocking and not is_nonblocking(invoke):
                    thread = self._thread(invoke, handler_id, None, on_discard)
                    invoke = thread.submit
                binding.add(handler_id, invoke, thread)
                return binding, thread
            binding = GroupBinding(
                topic,
                group,
                get_dispatcher(dispatcher),
                core.dropped,
                # Only where the transport runs hand-offs on its I/O thread does it matter.
                nonblocking=core.replies_inline and is_nonblocking(invoke),
            )
            binding.owns_dispatcher = not isinstance(dispatcher, Dispatcher)
            binding.add(handler_id, invoke, thread)
            self.groups[key] = binding
            # Subscribing under the lock keeps a concurrent member from racing a half-made
            # binding; transports must not call back into this queue from ``subscribe``.
            transport = core.transport
            try:
                if durable is not None:
                    binding.subscription_id = transport.subscribe_durable(
                        topic, binding.entry_point, group=group, durable=durable
                    )
                elif core.transport_groups:
                    binding.subscription_id = transport.subscribe(
                        topic, binding.entry_point, group=group
                    )
                else:
                    binding.subscription_id = transport.subscribe(topic, binding.entry_point)
            except BaseException:
                del self.groups[key]
                binding.close()
                raise
            return binding, thread

    def _release(
        self,
        entry: _Entry,
        transport_sub: str | None,
        drain: float | None = None,
        discard_waiting: bool = False,
    ) -> None:
        if transport_sub is not None:
            self.core.unsubscribe_transport(transport_sub)
        thread = entry.thread
        if thread is None:
            return
        if drain is None:
            thread.stop()
        elif discard_waiting:
            thread.stop(drain)
        elif not thread.finish(drain):
            log.warning(
                "handler %r did not finish its backlog within the drain of %.1f s; the "
                "messages left were discarded (counted in stats['dropped'])",
                getattr(entry.handler, "__qualname__", entry.handler),
                drain,
            )
