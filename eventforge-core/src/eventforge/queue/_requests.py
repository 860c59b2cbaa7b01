"""The request/reply part of a :class:`~eventforge.queue.MessageQueue`.

:class:`Requests` owns the queue's private reply inbox (see :mod:`eventforge.queue._inbox`) and
the request counters; it sends through the :class:`~eventforge.queue._core.QueueCore` it shares
with the rest of the queue. A request waits on the inbox, or on the transport's own
request/reply where it declares one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from eventforge.deadlines import DEADLINE_HEADER
from eventforge.dispatch import delivering_for
from eventforge.dispatch.middleware import compose_send
from eventforge.errors import NoRespondersError, RequestTimeout
from eventforge.message import Message, check_headers, new_message
from eventforge.queue._core import QueueCore
from eventforge.queue._inbox import NO_RESPONDERS, AsyncWaiter, Inbox, SyncWaiter
from eventforge.topics import validate_topic
from eventforge.transport import Counter

__all__ = ["Requests"]

log = logging.getLogger("eventforge.queue")


def _timed_out(topic: str, timeout: float | None) -> RequestTimeout:
    return RequestTimeout(
        f"no reply to the request on {topic!r} within {30.0 if timeout is None else timeout} s: "
        "is a responder subscribed to that topic (and replying with queue.reply)? Raise the "
        "timeout if it is just slow",
        topic=topic,
        timeout=timeout,
    )


class Requests:
    """Requests, replies and the reply inbox of one queue."""

    def __init__(self, core: QueueCore) -> None:
        self.core = core
        self.inbox: Inbox | None = None
        self.requests = Counter()
        self.timed_out = Counter()
        self.late_replies = Counter()
        self.no_responders = Counter()
        self._counted_send: tuple[list[object], Callable[[Message], None], bool] | None = None
        self._warned_delivery_request = False

    def request(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """:meth:`MessageQueue.request <eventforge.queue.MessageQueue.request>`."""
        message = self._request_message(topic, payload, headers, timeout)
        self.requests.bump()
        if self.core.native_request:
            message = self._through_send_middleware(message)
            try:
                reply = self.core.transport.request(message, 30.0 if timeout is None else timeout)
            except NoRespondersError:
                self.no_responders.bump()
                raise
            if reply is None:
                self.timed_out.bump()
            return reply
        if delivering_for() is self.core.transport and not self.core.replies_inline:
            self._warn_request_on_delivery_thread(topic)
        inbox = self.ensure_inbox()
        key = message.id
        message.reply_to = inbox.topic
        message.correlation_id = key
        waiter = SyncWaiter()
        inbox.pending[key] = waiter
        if self.core.closed:
            # close() may have woken the pending requests before this one was registered.
            inbox.pending.pop(key, None)
            raise self.core.closed_error()
        try:
            sender, waits = self._request_sender()
            sender(message)
            self.core.bump_published()
            if timeout is not None and waits:
                timeout = max(0.0, message.timestamp + timeout - time.time())  # a count was awaited
            if waiter.reply is None and not waiter.wait(timeout):
                if inbox.pending.pop(key, None) is None:
                    # The reply was taken just as the wait ran out: it is being offered now.
                    waiter.wait(None)
                else:
                    self.timed_out.bump()
                    return None
        finally:
            inbox.pending.pop(key, None)
        reply = waiter.reply
        if reply is NO_RESPONDERS:
            self.no_responders.bump()
            raise NoRespondersError(message.topic)
        if reply is None and self.core.closed:
            raise self.core.closed_error("while a request was waiting for its reply")
        return reply

    async def request_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """:meth:`MessageQueue.request_async <eventforge.queue.MessageQueue.request_async>`."""
        message = self._request_message(topic, payload, headers, timeout)
        self.requests.bump()
        if self.core.native_request:
            message = self._through_send_middleware(message)
            wait = 30.0 if timeout is None else timeout
            try:
                reply = await self.core.transport.request_async(message, wait)
            except NoRespondersError:
                self.no_responders.bump()
                raise
            if reply is None:
                self.timed_out.bump()
            return reply
        inbox = self.ensure_inbox()
        key = message.id
        message.reply_to = inbox.topic
        message.correlation_id = key
        waiter = AsyncWaiter(asyncio.get_running_loop())
        inbox.pending[key] = waiter
        if self.core.closed:
            inbox.pending.pop(key, None)
            raise self.core.closed_error()
        try:
            sender, waits = self._request_sender()
            if sender is self.core.send:
                await self.core.send_async(message)
            elif self.core.inline_async:
                sender(message)
            else:
                await asyncio.to_thread(sender, message)
                if timeout is not None and waits:  # a count was awaited
                    timeout = max(0.0, message.timestamp + timeout - time.time())
            self.core.bump_published()
            try:
                reply = await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except asyncio.TimeoutError:
                if inbox.pending.pop(key, None) is not None:
                    self.timed_out.bump()
                    return None
                # The reply was taken just as the wait ran out: it is being handed over now.
                reply = await waiter.future
        finally:
            inbox.pending.pop(key, None)
        if reply is NO_RESPONDERS:
            self.no_responders.bump()
            raise NoRespondersError(message.topic)
        if reply is None and self.core.closed:
            raise self.core.closed_error("while a request was waiting for its reply")
        return reply

    def ask(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """:meth:`MessageQueue.ask <eventforge.queue.MessageQueue.ask>`."""
        reply = self.request(topic, payload, timeout, **headers)
        if reply is None:
            raise _timed_out(topic, timeout)
        return reply

    async def ask_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """:meth:`MessageQueue.ask_async <eventforge.queue.MessageQueue.ask_async>`."""
        reply = await self.request_async(topic, payload, timeout, **headers)
        if reply is None:
            raise _timed_out(topic, timeout)
        return reply

    def reply(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """:meth:`MessageQueue.reply <eventforge.queue.MessageQueue.reply>`."""
        message = self._reply_message(original, payload, headers)
        self.core.send(message)
        self.core.bump_published()
        return message.id

    async def reply_async(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """:meth:`MessageQueue.reply_async <eventforge.queue.MessageQueue.reply_async>`."""
        message = self._reply_message(original, payload, headers)
        await self.core.send_async(message)
        self.core.bump_published()
        return message.id

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests.value,
            "requests_timed_out": self.timed_out.value,
            "late_replies": self.late_replies.value,
            "no_responders": self.no_responders.value,
            "expired_requests": self.core.expired.value,
            "pending_requests": self.pending,
        }

    @property
    def pending(self) -> int:
        """Requests currently waiting for a reply (0 when nothing is in flight: no leaks)."""
        inbox = self.inbox
        return len(inbox.pending) if inbox is not None else 0

    # -- internals ----------------------------------------------------------------------------

    def _through_send_middleware(self, message: Message) -> Message:
        """Run the send middleware for a native request; the request goes out as it returns."""
        if not self.core.middleware:
            return message
        outgoing: list[Message] = []
        compose_send(self.core.middleware, outgoing.append)(message)
        if not outgoing:
            raise ValueError(f"middleware dropped the request to {message.topic!r}")
        return outgoing[-1]

    def _request_message(
        self, topic: str, payload: Any, headers: dict[str, Any], timeout: float | None
    ) -> Message:
        self.core.check_open()
        if headers:
            check_headers(headers)
        message = new_message(validate_topic(topic), payload, headers)
        if timeout is not None or self.core.native_request:
            message.headers[DEADLINE_HEADER] = message.timestamp + (
                30.0 if timeout is None else timeout
            )
        return message

    def _request_sender(self) -> tuple[Callable[[Message], None], bool]:
        """The send of requests, and whether it waits for a count.

        Where the transport counts receivers, a request that nobody received ends with
        :class:`NoRespondersError`: without waiting where the transport can report "nobody"
        later (``send_reporting_nobody(message, nobody)``: ``nobody()`` wakes the waiter),
        else by waiting for ``send_counted``'s count. Built once per middleware chain.
        """
        middleware = self.core.middleware
        cached = self._counted_send
        if cached is not None and cached[0] is middleware:
            return cached[1], cached[2]
        transport = self.core.transport
        nowait = getattr(transport, "send_reporting_nobody", None)
        counted = transport.send_counted if transport.counts_receivers() else None
        send: Callable[[Message], None]
        if self.core.native_request or (nowait is None and counted is None):
            sender, waits = self.core.send, False
        elif nowait is not None:

            def send_nowait(message: Message) -> None:
                key, inbox = message.correlation_id, self.inbox

                def nobody() -> None:
                    if key is not None and inbox is not None:
                        inbox.no_responders(key)

                nowait(message, nobody)

            send, waits = send_nowait, False
            sender = compose_send(middleware, send) if middleware else send
        else:
            count: Callable[[Message], int | None] = counted  # type: ignore[assignment]

            def send_counted(message: Message) -> None:
                if count(message) == 0:
                    assert self.inbox is not None
                    self.inbox.no_responders(message.correlation_id or "")

            send, waits = send_counted, True
            sender = compose_send(middleware, send) if middleware else send
        self._counted_send = (middleware, sender, waits)
        return sender, waits

    def _reply_message(self, original: Message, payload: Any, headers: dict[str, Any]) -> Message:
        self.core.check_open()
        if not isinstance(original, Message):
            raise TypeError(f"reply() needs the request Message, got {type(original).__name__}")
        if not original.reply_to:
            raise ValueError(
                f"message {original.id!r} on {original.topic!r} has no reply_to: it was "
                "published, not sent with request(); there is nobody to reply to"
            )
        if headers:
            check_headers(headers)
        message = new_message(original.reply_to, payload, headers)
        message.correlation_id = original.correlation_id or original.id
        return message

    def ensure_inbox(self) -> Inbox:
        inbox = self.inbox
        if inbox is not None:
            return inbox
        with self.core.lock:
            self.core.check_open()
            if self.inbox is None:
                inbox = Inbox(self.late_replies)
                inbox.subscription_id = self.core.transport.subscribe(inbox.topic, inbox.deliver)
                self.inbox = inbox
            return self.inbox

    def _warn_request_on_delivery_thread(self, topic: str) -> None:
        if self._warned_delivery_request:
            return
        self._warned_delivery_request = True
        log.warning(
            "a handler of %r made a blocking request to %r on the %s transport's delivery "
            "thread; the reply is delivered on that same thread, so the request can only time "
            "out. Subscribe the handler with threaded=True, make it a coroutine and use "
            "request_async, or give the RPCServer an executor",
            self.core.name,
            topic,
            self.core.transport.name,
        )

    def close(self) -> None:
        """Unsubscribe the reply inbox and wake every waiting request (the queue is closing)."""
        inbox = self.inbox
        if inbox is not None:
            if inbox.subscription_id is not None:
                self.core.unsubscribe_transport(inbox.subscription_id)
            inbox.cancel_all()
