"""MessageQueue request/reply: sync and async, timeouts without leaks, late replies, native path."""

from __future__ import annotations

import asyncio
import threading

import pytest
from eventforge import MemoryTransport, Message, MessageQueue
from eventforge.errors import NoRespondersError, TransportClosedError
from eventforge.transport import Capability


@pytest.fixture
def queue():
    q = MessageQueue()
    yield q
    q.close()


def _echo(queue: MessageQueue, topic: str) -> None:
    queue.subscribe(topic, lambda m: queue.reply(m, {"echo": m.payload}, via="echo"))


def test_request_returns_the_reply_with_correlation(queue):
    seen: list[Message] = []

    def responder(message):
        seen.append(message)
        queue.reply(message, message.payload * 2)

    queue.subscribe("double", responder)
    reply = queue.request("double", 21, timeout=5, trace="t1")
    assert reply is not None
    assert reply.payload == 42
    request = seen[0]
    # The request carries its deadline: the caller's clock plus its timeout.
    assert request.headers == {"trace": "t1", "ef-deadline": request.timestamp + 5}
    assert request.reply_to is not None
    assert request.reply_to.startswith("_inbox.")
    assert reply.correlation_id == request.id
    assert queue.pending_requests == 0
    assert queue.stats["requests"] == 1


def test_reply_carries_headers_and_returns_an_id(queue):
    ids: list[str] = []
    queue.subscribe("h", lambda m: ids.append(queue.reply(m, "ok", served_by="a")))
    reply = queue.request("h", None, timeout=5)
    assert reply is not None
    assert reply.headers == {"served_by": "a"}
    assert reply.id == ids[0]


def test_reply_uses_correlation_id_when_present(queue):
    replies: list[Message] = []
    queue.subscribe("replies.here", replies.append)
    original = Message("ask", "q", reply_to="replies.here", correlation_id="corr-9")
    queue.reply(original, "a")
    without = Message("ask", "q", reply_to="replies.here")
    queue.reply(without, "b")
    assert [(r.payload, r.correlation_id) for r in replies] == [("a", "corr-9"), ("b", without.id)]


def test_reply_without_reply_to_is_a_clear_error(queue):
    with pytest.raises(ValueError, match="no reply_to"):
        queue.reply(Message("a.b", 1), "x")
    with pytest.raises(TypeError, match="Message"):
        queue.reply({"reply_to": "x"}, "x")  # type: ignore[arg-type]


def test_timed_out_request_returns_none_and_leaves_no_waiter(queue):
    queue.subscribe("nobody.home", lambda m: None)  # receives, never answers
    assert queue.request("nobody.home", 1, timeout=0.01) is None
    assert queue.request("nobody.home", 2, timeout=0) is None
    assert queue.pending_requests == 0
    assert queue.stats["requests_timed_out"] == 2


def test_late_reply_is_dropped_and_counted(queue):
    held: list[Message] = []
    queue.subscribe("slow", held.append)  # answers only later
    assert queue.request("slow", 1, timeout=0.01) is None
    assert queue.pending_requests == 0
    queue.reply(held[0], "too late")
    assert queue.stats["late_replies"] == 1


def test_reply_from_another_thread_wakes_the_requester(queue):
    def responder(message):
        threading.Timer(0.02, lambda: queue.reply(message, "later")).start()

    queue.subscribe("threaded", responder)
    reply = queue.request("threaded", None, timeout=10)
    assert reply is not None
    assert reply.payload == "later"


def test_many_concurrent_requests_each_get_their_own_reply(queue):
    _echo(queue, "echo")
    results: dict[int, object] = {}

    def ask(n):
        reply = queue.request("echo", n, timeout=10)
        results[n] = reply.payload if reply else None

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: {"echo": n} for n in range(20)}
    assert queue.pending_requests == 0


def test_close_wakes_a_waiting_request_with_an_error():
    queue = MessageQueue()
    queue.subscribe("nobody", lambda m: None)
    errors: list[BaseException] = []
    started = threading.Event()

    def ask():
        started.set()
        try:
            queue.request("nobody", 1, timeout=30)
        except TransportClosedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    started.wait()
    for _ in range(500):
        if queue.pending_requests:
            break
        threading.Event().wait(0.005)
    queue.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


def test_request_racing_close_is_woken_not_left_waiting() -> None:
    transport = MemoryTransport()
    queue = MessageQueue(transport, close_transport=False)
    requests = queue._requests
    ensure_inbox = requests.ensure_inbox

    def closed_meanwhile() -> object:
        # Another thread closes the queue just after the request found its inbox.
        inbox = ensure_inbox()
        queue.close()
        return inbox

    requests.ensure_inbox = closed_meanwhile  # type: ignore[method-assign]
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(queue.request("svc.echo", 1, timeout=None))
        except TransportClosedError as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(10)
    try:
        assert not asker.is_alive(), "request(timeout=None) hangs after a concurrent close"
        assert len(outcome) == 1
        assert isinstance(outcome[0], TransportClosedError)
        assert queue.pending_requests == 0
    finally:
        transport.close()  # wakes nothing here, but frees the transport


def test_request_async_gets_reply_from_sync_and_async_responders(queue):
    _echo(queue, "sync.echo")

    async def async_echo(message):
        await asyncio.sleep(0)
        await queue.reply_async(message, message.payload + 1)

    async def main():
        queue.subscribe("async.echo", async_echo)
        first = await queue.request_async("sync.echo", 1, timeout=5)
        second = await queue.request_async("async.echo", 1, timeout=5)
        return first.payload, second.payload

    assert asyncio.run(main()) == ({"echo": 1}, 2)
    assert queue.pending_requests == 0


def test_request_async_timeout_leaves_no_waiter_and_does_not_block_the_loop(queue):
    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        queue.subscribe("nobody", lambda m: None)
        ticker = asyncio.create_task(tick())
        reply = await queue.request_async("nobody", 1, timeout=0.05)
        ticker.cancel()
        return reply, ticks

    reply, ticks = asyncio.run(main())
    assert reply is None
    assert ticks > 1  # the loop kept running while the request waited
    assert queue.pending_requests == 0
    assert queue.stats["requests_timed_out"] == 1


def test_publish_async_and_receive_async(queue):
    got: list[object] = []
    queue.subscribe("a.b", lambda m: got.append(m.payload))

    async def main():
        message_id = await queue.publish_async("a.b", 1, h="v")
        await queue.publish_async("buffered.topic", "kept")
        received = await queue.receive_async("buffered.topic", timeout=1)
        nothing = await queue.receive_async("buffered.topic", timeout=0.01)
        return message_id, received, nothing

    message_id, received, nothing = asyncio.run(main())
    assert got == [1]
    assert isinstance(message_id, str)
    assert received is not None
    assert received.payload == "kept"
    assert nothing is None


class _NativeTransport(MemoryTransport):
    """A memory transport that also declares native request/reply, as NATS does."""

    capabilities = MemoryTransport.capabilities | {Capability.REQUEST_REPLY}

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Message] = []

    def request(self, message, timeout):
        self.requests.append(message)
        if message.topic == "nobody":
            raise NoRespondersError(message.topic)
        if message.topic == "silent":
            return None
        return Message("reply", {"answer": message.payload})


def test_native_request_reply_is_used_when_declared():
    transport = _NativeTransport()
    queue = MessageQueue(transport)
    reply = queue.request("ask", 5, timeout=1)
    assert reply is not None
    assert reply.payload == {"answer": 5}
    assert [m.payload for m in transport.requests] == [5]
    assert queue.stats["requests"] == 1
    assert queue.request("silent", 1, timeout=1) is None
    assert queue.stats["requests_timed_out"] == 1
    assert queue.pending_requests == 0
    reply = asyncio.run(queue.request_async("ask", 6, timeout=1))
    assert reply is not None
    assert reply.payload == {"answer": 6}
    queue.close()


def test_no_responders_propagates_instead_of_becoming_a_timeout():
    queue = MessageQueue(_NativeTransport())
    with pytest.raises(NoRespondersError, match="no responders"):
        queue.request("nobody", 1, timeout=1)
    with pytest.raises(NoRespondersError):
        asyncio.run(queue.request_async("nobody", 1, timeout=1))
    queue.close()


def test_async_context_manager_closes():
    async def main():
        async with MessageQueue() as queue:
            await queue.publish_async("a.b", 1)
        return queue

    assert asyncio.run(main()).closed


def test_close_async_awaits_the_transports_own_close_async():
    class AsyncClosing(MemoryTransport):
        closed_by: list[str] = []

        def close(self):
            self.closed_by.append("close")
            super().close()

        async def close_async(self):
            self.closed_by.append("close_async")
            super().close()

    async def main():
        transport = AsyncClosing()
        async with MessageQueue(transport) as queue:
            queue.subscribe("a", lambda m: None)
        await queue.close_async()  # idempotent
        return transport

    assert asyncio.run(main()).closed_by == ["close_async"]
    plain = MessageQueue()
    asyncio.run(plain.close_async())  # a transport without close_async: closed in a thread
    assert plain.closed
    with pytest.raises(TransportClosedError):
        plain.transport.send(Message("a", 1))
