"""What every part of a :class:`~eventforge.queue.MessageQueue` shares.

A queue is composed of parts: its subscriptions (:mod:`eventforge.queue._subscriptions`), its
requests and reply inbox (:mod:`eventforge.queue._requests`), and the queue object itself, which
publishes and gives the user one API. They share one :class:`QueueCore`: the transport and what
it declares, the lock and the closed flag, the send path with its middleware and unroutable
policy, the error report, and the counters that ``stats`` shows. No part reaches into another.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventforge.dispatch.middleware import compose_send, resolve_middleware
from eventforge.errors import TransportClosedError
from eventforge.events import EventValidationError
from eventforge.message import Message
from eventforge.queue._routing import unroutable_sender
from eventforge.transport import Capability, Counter, Transport, is_native

__all__ = ["ErrorHook", "QueueCore"]

log = logging.getLogger("eventforge.queue")

ErrorHook = Callable[[BaseException, Message, Callable[..., Any]], None]


class QueueCore:
    """The transport, lifecycle, send path, error report and counters of one queue."""

    def __init__(
        self,
        transport: Transport,
        name: str,
        error_hook: ErrorHook | None,
        middleware: Sequence[object] | None,
        unroutable: str | Callable[[Message], Any] | None,
    ) -> None:
        self.transport = transport
        self.name = name
        self.error_hook = error_hook
        self.lock = threading.RLock()
        self.closed = False
        self.native_request = transport.has(Capability.REQUEST_REPLY)
        self.transport_groups = transport.has(Capability.GROUPS)
        self.inline_async = transport.has(Capability.ZERO_COPY)
        self.replies_inline = transport.has(Capability.NONBLOCKING_INLINE)
        self.header_match = transport.has(Capability.HEADER_MATCH)
        self.published = Counter()
        self.delivered = Counter()
        self.handler_errors = Counter()
        self.dropped = Counter()
        self.expired = Counter()
        self.filtered = Counter()
        self.rejected = Counter()
        self.unroutable = Counter()
        self.bump_published = self.published.bump
        self.middleware: list[object] = resolve_middleware(middleware)
        self.unroutable_policy = unroutable
        self.send: Callable[[Message], None] = transport.send
        self.publish_send: Callable[[Message], None] = transport.send
        self.rebuild_send()

    # -- lifecycle ----------------------------------------------------------------------------

    def closed_error(self, when: str = "") -> TransportClosedError:
        suffix = f" {when}" if when else ""
        return TransportClosedError(
            f"MessageQueue {self.name!r} was closed{suffix}; create a new queue"
        )

    def check_open(self) -> None:
        if self.closed:
            raise self.closed_error()

    # -- sending ------------------------------------------------------------------------------

    def use(self, middleware: list[object]) -> None:
        """Append resolved middleware; the send side changes at once."""
        with self.lock:
            self.middleware = [*self.middleware, *middleware]
            self.rebuild_send()

    def rebuild_send(self) -> None:
        """Compose the send path (middleware, then the unroutable policy on publishes)."""
        send = self.transport.send
        self.send = compose_send(self.middleware, send) if self.middleware else send
        self.publish_send = self.send
        if self.unroutable_policy is not None:
            routed = unroutable_sender(self.transport, self.unroutable_policy, self.unroutable.bump)
            if routed is not None:
                self.publish_send = compose_send(self.middleware, routed)

    async def send_async(self, message: Message) -> None:
        """Send through the middleware without blocking the running loop."""
        if self.inline_async:
            self.send(message)
            return
        native = self.transport.send_async if is_native(self.transport, "send_async") else None
        if native is None:
            await asyncio.to_thread(self.send, message)
        elif self.middleware:
            outgoing: list[Message] = []
            compose_send(self.middleware, outgoing.append)(message)
            for item in outgoing:
                await native(item)
        else:
            await native(message)

    def unsubscribe_transport(self, subscription_id: str) -> None:
        try:
            self.transport.unsubscribe(subscription_id)
        except TransportClosedError:
            pass
        except Exception:
            log.exception("transport failed to unsubscribe %r", subscription_id)

    # -- handler errors -----------------------------------------------------------------------

    def report_error(
        self, exc: BaseException, message: Message, handler: Callable[..., Any]
    ) -> None:
        """Log a handler's error, call the error hook, then count it (so a count seen means
        the hook has run)."""
        if isinstance(exc, EventValidationError):
            log.warning("%s; the handler was not called", exc)
            self._call_error_hook(exc, message, handler)
            self.rejected.bump()
            return
        log.error(
            "handler %s raised on topic %r (message %s)",
            getattr(handler, "__qualname__", repr(handler)),
            message.topic,
            message.id,
            exc_info=exc,
        )
        self._call_error_hook(exc, message, handler)
        self.handler_errors.bump()

    def _call_error_hook(
        self, exc: BaseException, message: Message, handler: Callable[..., Any]
    ) -> None:
        hook = self.error_hook
        if hook is not None:
            try:
                hook(exc, message, handler)
            except Exception:
                log.exception("error_hook raised while handling an error; ignored")
