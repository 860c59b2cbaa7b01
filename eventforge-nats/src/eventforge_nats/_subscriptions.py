"""The subscriptions of a NATS transport: NATS subjects in, callbacks called.

A subscription is one or two NATS subscriptions (see :mod:`eventforge_nats._subjects`) whose
messages are filtered, decoded and handed to the callback. The hand-over happens on the
connection's event loop for callbacks that never block (those marked
:func:`~eventforge.transport.nonblocking`, and every callback with ``delivery="loop"``), and
otherwise on the transport's :class:`~eventforge.transport.DeliveryThread`, so a callback may
block without stalling the connection. Coroutine functions run on the loop that was running
when they subscribed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from eventforge.errors import ConfigurationError, ProtocolError
from eventforge.message import Message
from eventforge.topics import topic_matches, validate_pattern
from eventforge.transport import Callback, Counter, DeliveryThread, Waiter, is_nonblocking
from eventforge.wire import WireCodec

from ._connection import NatsConnection
from ._subjects import SubjectPlan, plan_subjects

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription

__all__ = ["Subscription", "Subscriptions"]

log = logging.getLogger("eventforge.transports.nats")

_NO_QUEUE = ""


@dataclass(eq=False)
class Subscription:
    """One eventforge subscription and the NATS subscriptions that carry it."""

    id: str
    plan: SubjectPlan
    callback: Callback
    group: str | None
    loop: asyncio.AbstractEventLoop | None
    """The loop a coroutine callback runs on (``None`` for a plain function)."""
    inline: bool
    """Whether the callback runs on the connection's loop instead of the delivery thread."""
    nats_subs: list[NatsSubscription] = field(default_factory=list)
    active: bool = True


class Subscriptions:
    """Every subscription of one transport, the delivery thread, and their counters."""

    def __init__(
        self, conn: NatsConnection, codec: WireCodec, *, delivery: str, max_pending: int
    ) -> None:
        self._conn = conn
        self._loop = conn.loop
        self._codec = codec
        self._delivery = delivery
        self._max_pending = max_pending
        self._subs: dict[str, Subscription] = {}
        self._ids = itertools.count(1)
        self._thread: DeliveryThread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Bumped from the loop and the delivery thread: Counter steps are atomic.
        self.delivered = Counter()
        self.filtered = Counter()
        self.decode_errors = Counter()
        self.callback_errors = Counter()

    def __len__(self) -> int:
        return len(self._subs)

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callback, group: str | None) -> str:
        """Subscribe, blocking until the server has it (on the loop itself: a moment later)."""
        sub = self.new(topic, callback, group)
        if self._conn.bg.in_loop_thread():
            # On the connection's own loop nothing may block: subscribe in a task.
            self._subs[sub.id] = sub
            task = self._loop.create_task(self._add_later(sub))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return sub.id
        self._conn.run(self.add(sub))
        return sub.id

    async def subscribe_async(self, topic: str, callback: Callback, group: str | None) -> str:
        """:meth:`subscribe` for coroutines: returns once the server has it."""
        sub = self.new(topic, callback, group)
        await self._conn.call(self.add(sub))
        return sub.id

    def new(self, topic: str, callback: Callback, group: str | None) -> Subscription:
        """Check the arguments and make the record (nothing is subscribed yet)."""
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if group is not None and (
            not isinstance(group, str) or not group or any(c.isspace() for c in group)
        ):
            raise ConfigurationError(
                f"group must be a non-empty name without whitespace, got {group!r}", key="group"
            )
        loop: asyncio.AbstractEventLoop | None = None
        if inspect.iscoroutinefunction(callback):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = self._loop
        # A callback that only hands the message on (to a handler thread, a reply waiter) runs
        # on the loop in every mode: one thread hop less per message.
        inline = self._delivery == "loop" or (loop is None and is_nonblocking(callback))
        if not inline and self._thread is None:
            self._thread = DeliveryThread(
                "eventforge-nats-delivery", self._deliver, self._max_pending
            )
        return Subscription(
            f"nats-{next(self._ids)}", plan_subjects(topic), callback, group, loop, inline
        )

    async def add(self, sub: Subscription) -> None:
        """Subscribe ``sub``'s subjects and wait until the server has them (on the loop)."""
        nc = self._conn.client
        deliver = self._deliver
        if sub.inline:

            async def on_message(msg: Msg) -> None:
                deliver(sub, msg.subject, msg.data, msg.reply)

        else:
            assert self._thread is not None
            put = self._thread.put

            async def on_message(msg: Msg) -> None:
                put((sub, msg.subject, msg.data, msg.reply))

        try:
            for subject in sub.plan.subjects:
                sub.nats_subs.append(
                    await nc.subscribe(subject, queue=sub.group or _NO_QUEUE, cb=on_message)
                )
            if nc.is_connected:
                await nc.flush(timeout=math.ceil(self._conn.settings.connect_timeout))
        except Exception:
            await self.release(sub)
            raise
        if not sub.active:  # unsubscribed while it was being set up
            await self.release(sub)
            return
        self._subs[sub.id] = sub

    async def _add_later(self, sub: Subscription) -> None:
        try:
            await self.add(sub)
        except Exception as exc:
            self._subs.pop(sub.id, None)
            sub.active = False
            log.error("NATS subscription to %r failed: %r", sub.plan.pattern, exc)

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription at once; the server is told (blocking, except on the loop)."""
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        sub.active = False
        if not self._closed and not self._conn.bg.in_loop_thread():
            self._conn.run(self.release(sub))
        else:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self.release(sub)))
        return True

    async def release(self, sub: Subscription) -> None:
        """Unsubscribe ``sub``'s NATS subscriptions (on the loop)."""
        for nats_sub in sub.nats_subs:
            try:
                await nats_sub.unsubscribe()
            except Exception as exc:  # closed connection or already gone: nothing left to undo
                log.debug("NATS unsubscribe of %r: %r", sub.plan.pattern, exc)
        sub.nats_subs.clear()

    # -- receiving once --------------------------------------------------------------------

    async def receive(self, topic: str, timeout: float | None) -> Message | None:
        """The next message on ``topic``, through a temporary subscription (on the loop)."""
        waiter = Waiter(asyncio.get_running_loop())
        sub = self.new(topic, waiter, None)
        await self.add(sub)
        try:
            return await waiter.wait_async(timeout)
        finally:
            self._subs.pop(sub.id, None)
            sub.active = False
            await self.release(sub)

    # -- delivering ------------------------------------------------------------------------

    def _deliver(self, sub: Subscription, subject: str, data: bytes, reply: str) -> None:
        """Filter, decode, call back (on the delivery thread, or on the loop when inline)."""
        if not sub.active:
            return
        if sub.plan.needs_filter and not topic_matches(sub.plan.pattern, subject):
            self.filtered.bump()
            return
        message = self.decode(data, subject)
        if message is None:
            return
        if reply:
            message.reply_to = reply
        self.delivered.bump()
        if sub.loop is not None:
            future = asyncio.run_coroutine_threadsafe(
                self._run_coroutine(sub.callback, message), sub.loop
            )
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            return
        try:
            sub.callback(message)
        except Exception:
            self.callback_errors.bump()
            log.exception("subscription callback raised for topic %r", message.topic)

    async def _run_coroutine(self, callback: Callback, message: Message) -> None:
        try:
            await cast(Callable[[Message], Awaitable[None]], callback)(message)
        except Exception:
            self.callback_errors.bump()
            log.exception("subscription coroutine raised for topic %r", message.topic)

    def decode(self, data: bytes, subject: str) -> Message | None:
        """The message in ``data``; ``None`` (counted, logged now and then) when malformed."""
        try:
            return self._codec.decode(data)
        except ProtocolError as exc:
            count = self.decode_errors.bump() + 1
            if count in (1, 10, 100) or count % 1000 == 0:
                log.warning(
                    "dropped a malformed envelope on NATS subject %r (%d so far): %s",
                    subject,
                    count,
                    exc,
                )
            return None

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> list[Subscription]:
        """Deactivate every subscription (no callback is called after this); return them."""
        self._closed = True
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            sub.active = False
        for task in list(self._tasks):  # made on the loop, not active yet
            self._loop.call_soon_threadsafe(task.cancel)
        return subs

    def stop_delivery(self) -> None:
        """Deliver what the delivery thread holds, then end it."""
        if self._thread is not None:
            self._thread.stop()

    def stats(self) -> dict[str, Any]:
        """The counters of this transport's deliveries."""
        thread = self._thread
        return {
            "delivered": self.delivered.value,
            "dropped": thread.dropped if thread is not None else 0,
            "decode_errors": self.decode_errors.value,
            "callback_errors": self.callback_errors.value,
            "filtered": self.filtered.value,
            "delivery_queue": thread.depth() if thread is not None else 0,
            "subscriptions": len(self._subs),
        }
