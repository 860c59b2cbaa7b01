"""Request/reply for :class:`~eventforge.queue.MessageQueue`, and the message builders it shares.

Kept apart from :mod:`eventforge.queue` so that module stays about publishing and subscribing;
``MessageQueue`` inherits :class:`RequestReply`. A request waits on the queue's private reply
inbox (see :mod:`eventforge.queue._inbox`), or on the transport's own request/reply where it declares
one. Messages are built and their headers checked by :func:`eventforge.message.new_message` and
:func:`eventforge.message.check_headers`, which the publish path shares.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventforge.deadlines import DEADLINE_HEADER
from eventforge.dispatch import delivering_for
from eventforge.dispatch.middleware import compose_send
from eventforge.errors import NoRespondersError, RequestTimeout, TransportClosedError
from eventforge.message import Message, check_headers, new_message
from eventforge.queue._inbox import NO_RESPONDERS, AsyncWaiter, Inbox, SyncWaiter
from eventforge.topics import validate_topic
from eventforge.transport import Counter, Transport

__all__ = ["RequestReply"]

log = logging.getLogger("eventforge.queue")


def _timed_out(topic: str, timeout: float | None) -> RequestTimeout:
    return RequestTimeout(
        f"no reply to the request on {topic!r} within {30.0 if timeout is None else timeout} s: "
        "is a responder subscribed to that topic (and replying with queue.reply)? Raise the "
        "timeout if it is just slow",
        topic=topic,
        timeout=timeout,
    )


class RequestReply:
    """Mixin of :class:`~eventforge.queue.MessageQueue`: request/reply and its reply inbox."""

    transport: Transport
    name: str
    _lock: threading.RLock
    _closed: bool
    _inbox: Inbox | None
    _native_request: bool
    _replies_inline: bool
    _inline_async: bool
    _warned_delivery_request: bool
    _middleware: list[object]
    _send: Callable[[Message], None]
    _bump_published: Callable[[], int]
    _requests: Counter
    _timed_out: Counter
    _late_replies: Counter
    _no_responders: Counter
    _expired: Counter
    _counted_send: tuple[list[object], Callable[[Message], None], bool] | None

    if TYPE_CHECKING:

        def _closed_error(self, when: str = "") -> TransportClosedError: ...

        def _check_open(self) -> None: ...

        async def _send_async(self, message: Message) -> None: ...

    def request(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """Publish a request and wait for one reply; ``None`` when ``timeout`` passes first.

        ``timeout=None`` waits without limit (on native request/reply transports: 30 s).
        A responder answers with :meth:`reply`. A timed-out request leaves no waiter behind;
        a reply that arrives after it is dropped and counted in ``stats["late_replies"]``.
        The request carries its deadline (see :mod:`eventforge.deadlines`): a handler never
        receives it after the deadline has passed.

        A request that nobody is subscribed to raises
        :class:`~eventforge.errors.NoRespondersError` at once on a transport that knows it:
        one with native request/reply (NATS) or one that counts receivers (``send_counted``:
        memory, TCP, Redis). It was not delivered anywhere, so it is safe to retry.
        """
        message = self._request_message(topic, payload, headers, timeout)
        self._requests.bump()
        if self._native_request:
            message = self._through_send_middleware(message)
            try:
                reply = self.transport.request(message, 30.0 if timeout is None else timeout)
            except NoRespondersError:
                self._no_responders.bump()
                raise
            if reply is None:
                self._timed_out.bump()
            return reply
        if delivering_for() is self.transport and not self._replies_inline:
            self._warn_request_on_delivery_thread(topic)
        inbox = self._ensure_inbox()
        key = message.id
        message.reply_to = inbox.topic
        message.correlation_id = key
        waiter = SyncWaiter()
        inbox.pending[key] = waiter
        if self._closed:
            # close() may have woken the pending requests before this one was registered.
            inbox.pending.pop(key, None)
            raise self._closed_error()
        try:
            sender, waits = self._request_sender()
            sender(message)
            self._bump_published()
            if timeout is not None and waits:
                timeout = max(0.0, message.timestamp + timeout - time.time())  # a count was awaited
            if waiter.reply is None and not waiter.wait(timeout):
                if inbox.pending.pop(key, None) is None:
                    # The reply was taken just as the wait ran out: it is being offered now.
                    waiter.wait(None)
                else:
                    self._timed_out.bump()
                    return None
        finally:
            inbox.pending.pop(key, None)
        reply = waiter.reply
        if reply is NO_RESPONDERS:
            self._no_responders.bump()
            raise NoRespondersError(message.topic)
        if reply is None and self._closed:
            raise self._closed_error("while a request was waiting for its reply")
        return reply

    async def request_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """Like :meth:`request`, awaiting the reply without blocking the running event loop."""
        message = self._request_message(topic, payload, headers, timeout)
        self._requests.bump()
        if self._native_request:
            message = self._through_send_middleware(message)
            wait = 30.0 if timeout is None else timeout
            try:
                reply = await self.transport.request_async(message, wait)
            except NoRespondersError:
                self._no_responders.bump()
                raise
            if reply is None:
                self._timed_out.bump()
            return reply
        inbox = self._ensure_inbox()
        key = message.id
        message.reply_to = inbox.topic
        message.correlation_id = key
        waiter = AsyncWaiter(asyncio.get_running_loop())
        inbox.pending[key] = waiter
        if self._closed:
            inbox.pending.pop(key, None)
            raise self._closed_error()
        try:
            sender, waits = self._request_sender()
            if sender is self._send:
                await self._send_async(message)
            elif self._inline_async:
                sender(message)
            else:
                await asyncio.to_thread(sender, message)
                if timeout is not None and waits:  # a count was awaited
                    timeout = max(0.0, message.timestamp + timeout - time.time())
            self._bump_published()
            try:
                reply = await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except asyncio.TimeoutError:
                if inbox.pending.pop(key, None) is not None:
                    self._timed_out.bump()
                    return None
                # The reply was taken just as the wait ran out: it is being handed over now.
                reply = await waiter.future
        finally:
            inbox.pending.pop(key, None)
        if reply is NO_RESPONDERS:
            self._no_responders.bump()
            raise NoRespondersError(message.topic)
        if reply is None and self._closed:
            raise self._closed_error("while a request was waiting for its reply")
        return reply

    def ask(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """Like :meth:`request`, but return the reply or raise :class:`RequestTimeout`.

        For code that cannot go on without an answer: the result is a :class:`Message`, never
        ``None``, so it type-checks without a ``None`` test.
        """
        reply = self.request(topic, payload, timeout, **headers)
        if reply is None:
            raise _timed_out(topic, timeout)
        return reply

    async def ask_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """Like :meth:`request_async`, but return the reply or raise :class:`RequestTimeout`."""
        reply = await self.request_async(topic, payload, timeout, **headers)
        if reply is None:
            raise _timed_out(topic, timeout)
        return reply

    def reply(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """Answer the request ``original`` with ``payload``; return the reply's message id."""
        message = self._reply_message(original, payload, headers)
        self._send(message)
        self._bump_published()
        return message.id

    async def reply_async(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """Like :meth:`reply`, without blocking the running event loop."""
        message = self._reply_message(original, payload, headers)
        await self._send_async(message)
        self._bump_published()
        return message.id

    def _init_requests(self) -> None:
        """Create the request counters (called by the queue's constructor)."""
        self._requests = Counter()
        self._timed_out = Counter()
        self._late_replies = Counter()
        self._no_responders = Counter()
        self._expired = Counter()
        self._counted_send = None

    def _request_stats(self) -> dict[str, int]:
        return {
            "requests": self._requests.value,
            "requests_timed_out": self._timed_out.value,
            "late_replies": self._late_replies.value,
            "no_responders": self._no_responders.value,
            "expired_requests": self._expired.value,
            "pending_requests": self.pending_requests,
        }

    @property
    def pending_requests(self) -> int:
        """Requests currently waiting for a reply (0 when nothing is in flight: no leaks)."""
        inbox = self._inbox
        return len(inbox.pending) if inbox is not None else 0

    # -- internals ----------------------------------------------------------------------------

    def _through_send_middleware(self, message: Message) -> Message:
        """Run the send middleware for a native request; the request goes out as it returns."""
        if not self._middleware:
            return message
        outgoing: list[Message] = []
        compose_send(self._middleware, outgoing.append)(message)
        if not outgoing:
            raise ValueError(f"middleware dropped the request to {message.topic!r}")
        return outgoing[-1]

    def _request_message(
        self, topic: str, payload: Any, headers: dict[str, Any], timeout: float | None
    ) -> Message:
        self._check_open()
        if headers:
            check_headers(headers)
        message = new_message(validate_topic(topic), payload, headers)
        if timeout is not None or self._native_request:
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
        middleware = self._middleware
        cached = self._counted_send
        if cached is not None and cached[0] is middleware:
            return cached[1], cached[2]
        transport = self.transport
        nowait = getattr(transport, "send_reporting_nobody", None)
        counted = transport.send_counted if transport.counts_receivers() else None
        send: Callable[[Message], None]
        if self._native_request or (nowait is None and counted is None):
            sender, waits = self._send, False
        elif nowait is not None:

            def send_nowait(message: Message) -> None:
                key, inbox = message.correlation_id, self._inbox

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
                    assert self._inbox is not None
                    self._inbox.no_responders(message.correlation_id or "")

            send, waits = send_counted, True
            sender = compose_send(middleware, send) if middleware else send
        self._counted_send = (middleware, sender, waits)
        return sender, waits

    def _reply_message(self, original: Message, payload: Any, headers: dict[str, Any]) -> Message:
        self._check_open()
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

    def _ensure_inbox(self) -> Inbox:
        inbox = self._inbox
        if inbox is not None:
            return inbox
        with self._lock:
            self._check_open()
            if self._inbox is None:
                inbox = Inbox(self._late_replies)
                inbox.subscription_id = self.transport.subscribe(inbox.topic, inbox.deliver)
                self._inbox = inbox
            return self._inbox

    def _warn_request_on_delivery_thread(self, topic: str) -> None:
        if self._warned_delivery_request:
            return
        self._warned_delivery_request = True
        log.warning(
            "a handler of %r made a blocking request to %r on the %s transport's delivery "
            "thread; the reply is delivered on that same thread, so the request can only time "
            "out. Subscribe the handler with threaded=True, make it a coroutine and use "
            "request_async, or give the RPCServer an executor",
            self.name,
            topic,
            self.transport.name,
        )
