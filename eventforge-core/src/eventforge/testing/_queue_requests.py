"""The queue conformance tests of request/reply: replies, async twins, timeouts, deadlines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventforge.errors import NoRespondersError
from eventforge.message import Message
from eventforge.testing._queue_harness import QueueHarness
from eventforge.testing._transport_harness import PROBE_KEY
from eventforge.testing.deadline_checks import check_expired_request_never_reaches_a_handler
from eventforge.testing.payload_fidelity import check_bytes_request_and_reply
from eventforge.transport import Capability

__all__ = ["RequestReplyContract"]


class RequestReplyContract(QueueHarness):
    """``request`` gets the reply to it, or fails fast or times out without leaking a waiter."""

    test_bytes_request_and_reply = check_bytes_request_and_reply

    def test_request_gets_the_reply(self) -> None:
        """``request`` returns the responder's ``reply``, correlated to the request."""
        requester, responder = self.new_queue(), self.new_queue()
        topic = self.topic("math.add")

        def add(message: Message) -> None:
            payload = message.payload
            if isinstance(payload, dict) and PROBE_KEY in payload:
                responder.reply(message, "probe")
                return
            responder.reply(message, payload["a"] + payload["b"], served_by="responder")

        responder.subscribe(topic, add)
        self.wait_for_responder(requester, topic)
        reply = requester.request(topic, {"a": 10, "b": 20}, timeout=self.delivery_timeout)
        assert reply is not None
        assert reply.payload == 30
        if requester.transport.has(Capability.HEADERS):
            assert reply.headers.get("served_by") == "responder"
        assert requester.pending_requests == 0

    def test_request_async_gets_the_reply(self) -> None:
        """``request_async`` and ``reply_async`` answer without blocking the event loop."""
        requester, responder = self.new_queue(), self.new_queue()
        topic = self.topic("echo")

        async def echo(message: Message) -> None:
            await responder.reply_async(message, message.payload)

        responder.subscribe(topic, echo)
        self.wait_for_responder(requester, topic)

        async def main() -> list[Any]:
            replies = await asyncio.gather(
                *(
                    requester.request_async(topic, n, timeout=self.delivery_timeout)
                    for n in range(5)
                )
            )
            return [r.payload if r is not None else None for r in replies]

        assert asyncio.run(main()) == list(range(5))
        assert requester.pending_requests == 0

    def test_unanswered_request_fails_fast_or_times_out_without_leaking(self) -> None:
        """A request to nobody fails fast where receivers are countable, else times out; no leak."""
        requester = self.new_queue()
        transport = requester.transport
        knows = transport.has(Capability.REQUEST_REPLY) or transport.counts_receivers()
        try:
            assert requester.request(self.topic("none"), "?", timeout=self.absence_timeout) is None
            assert not knows, "a transport that can count receivers must fail fast"
            assert requester.stats["requests_timed_out"] == 1
        except NoRespondersError:
            assert knows, "only a transport that can count receivers may report no responders"
        assert requester.pending_requests == 0

    def test_request_past_its_deadline_never_reaches_a_handler(self) -> None:
        """A request that timed out in a busy handler's backlog is skipped and counted, not run."""
        server, client = self.new_queue(), self.new_queue()
        check_expired_request_never_reaches_a_handler(
            server, client, self.topic("deadline"), wait=self.delivery_timeout
        )

    def test_reply_needs_a_request(self) -> None:
        """Replying to a message that was published (no reply_to) raises ValueError."""
        queue = self.new_queue()
        with pytest.raises(ValueError, match="reply_to"):
            queue.reply(Message(self.topic("plain"), "x"), "answer")
