"""Behaviour on transports that deliver on a reader thread of their own, as network ones do.

``ReaderThreadTransport`` is a real transport with the shape of the TCP/Redis clients: sends go
into an in-process space, and every callback runs on one reader thread, one message at a time.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading

import pytest
from eventforge import MemoryTransport, Message, MessageQueue, RPCClient, RPCServer
from eventforge.errors import RemoteError, RPCTimeout
from eventforge.execution import ExecutionMode, Executor
from eventforge.testing import wait_until
from eventforge.transport import Callback, Capability, Transport, is_nonblocking, nonblocking


class ReaderThreadTransport(Transport):
    """Delivers every callback on one reader thread (no ZERO_COPY: like a network client)."""

    name = "reader-thread"
    capabilities = frozenset({Capability.WILDCARDS, Capability.GROUPS, Capability.HEADERS})

    def __init__(self) -> None:
        self._space = MemoryTransport()
        self._inbox: stdlib_queue.SimpleQueue[tuple[Callback, Message] | None] = (
            stdlib_queue.SimpleQueue()
        )
        self._reader = threading.Thread(target=self._read, name="reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            callback, message = item
            try:
                callback(message)
            except Exception:
                logging.getLogger(__name__).exception("callback raised")

    def send(self, message: Message) -> None:
        self._space.send(message)

    def receive(self, topic, timeout=None):
        return self._space.receive(topic, timeout)

    def subscribe(self, topic, callback, *, group=None):
        def enqueue(message: Message) -> None:
            self._inbox.put((callback, message))

        return self._space.subscribe(topic, enqueue, group=group)

    def unsubscribe(self, subscription_id):
        return self._space.unsubscribe(subscription_id)

    def close(self) -> None:
        self._space.close()
        self._inbox.put(None)
        self._reader.join(5)


@pytest.fixture
def queue():
    q = MessageQueue(ReaderThreadTransport())
    yield q
    q.close()


def test_blocking_request_from_a_reader_thread_handler_is_reported(queue, caplog):
    outcome: list[object] = []
    done = threading.Event()
    queue.subscribe("answer", lambda m: queue.reply(m, 42))

    def asks_inline(message):
        outcome.append(queue.request("answer", None, timeout=0.05))
        done.set()

    queue.subscribe("ask", asks_inline)
    with caplog.at_level(logging.WARNING, logger="eventforge.queue"):
        queue.publish("ask")
        assert done.wait(10)
    assert outcome == [None]  # the reply waits behind the handler on the same thread
    assert "delivery thread" in caplog.text
    assert "threaded=True" in caplog.text


def test_threaded_handler_may_make_blocking_requests(queue, caplog):
    outcome: list[object] = []
    done = threading.Event()
    queue.subscribe("answer", lambda m: queue.reply(m, 42))

    def asks(message):
        reply = queue.request("answer", None, timeout=10)
        outcome.append(reply.payload if reply else None)
        done.set()

    queue.subscribe("ask", asks, threaded=True)
    with caplog.at_level(logging.WARNING, logger="eventforge.queue"):
        queue.publish("ask")
        assert done.wait(10)
    assert outcome == [42]
    assert "delivery thread" not in caplog.text


def test_rpc_server_on_a_network_style_transport_runs_on_its_own_thread(queue):
    inner = RPCServer(queue, service_name="inner")
    inner.add_method("double", lambda x: x * 2)
    inner.serve(blocking=False)
    outer = RPCServer(queue, service_name="outer")
    inner_client = RPCClient(queue, service_name="inner", timeout=10)
    outer.add_method("quadruple", lambda x: inner_client.double(inner_client.double(x)))
    outer.serve(blocking=False)
    assert outer.threaded
    assert RPCClient(queue, service_name="outer", timeout=10).quadruple(3) == 12
    outer.stop()
    inner.stop()


def test_rpc_server_inline_on_a_network_style_transport_cannot_nest_calls(queue):
    inner = RPCServer(queue, service_name="inner", threaded=False)
    inner.add_method("double", lambda x: x * 2)
    inner.serve(blocking=False)
    outer = RPCServer(queue, service_name="outer", threaded=False)
    inner_client = RPCClient(queue, service_name="inner", timeout=0.05)
    outer.add_method("nested", lambda x: inner_client.double(x))
    outer.serve(blocking=False)
    with pytest.raises(RemoteError) as info:
        RPCClient(queue, service_name="outer", timeout=10).nested(3)
    assert info.value.type_name == "RPCTimeout"  # the inner call timed out on the server
    outer.stop()
    inner.stop()


def test_rpc_server_is_inline_on_the_memory_transport():
    queue = MessageQueue()
    server = RPCServer(queue)
    assert not server.threaded
    queue.close()


def test_rpc_client_times_out_against_a_stopped_server(queue):
    server = RPCServer(queue, service_name="svc")
    server.add_method("f", lambda: 1)
    server.serve(blocking=False)
    client = RPCClient(queue, service_name="svc", timeout=10)
    assert client.f() == 1
    server.stop()
    with pytest.raises(RPCTimeout):
        client.call("f", timeout=0.05)
    assert queue.pending_requests == 0


class InlineHandoffTransport(ReaderThreadTransport):
    """Like ``ReaderThreadTransport``, but runs ``nonblocking`` callbacks at once, as TCP does."""

    name = "inline-handoff"
    capabilities = ReaderThreadTransport.capabilities | {Capability.NONBLOCKING_INLINE}

    def subscribe(self, topic, callback, *, group=None):
        if is_nonblocking(callback):
            return self._space.subscribe(topic, callback, group=group)
        return super().subscribe(topic, callback, group=group)


@pytest.fixture
def inline_queue():
    q = MessageQueue(InlineHandoffTransport())
    yield q
    q.close()


def test_request_from_a_reader_thread_handler_gets_its_reply_when_replies_run_inline(
    inline_queue, caplog
):
    queue = inline_queue
    outcome: list[object] = []
    done = threading.Event()
    # The responder must not wait behind the asking handler (in a real deployment it lives in
    # another process); the reply itself is what must not queue up behind it.
    queue.subscribe("answer", lambda m: queue.reply(m, 42), threaded=True)

    def asks_inline(message):
        reply = queue.request("answer", None, timeout=10)
        outcome.append(reply.payload if reply else None)
        done.set()

    queue.subscribe("ask", asks_inline)
    with caplog.at_level(logging.WARNING, logger="eventforge.queue"):
        queue.publish("ask")
        assert done.wait(10)
    assert outcome == [42]
    assert "delivery thread" not in caplog.text


def test_rpc_server_inline_may_nest_calls_when_replies_run_inline(inline_queue):
    queue = inline_queue
    inner = RPCServer(queue, service_name="inner")  # its own thread, as in another process
    inner.add_method("double", lambda x: x * 2)
    inner.serve(blocking=False)
    outer = RPCServer(queue, service_name="outer", threaded=False)
    inner_client = RPCClient(queue, service_name="inner", timeout=10)
    outer.add_method("nested", lambda x: inner_client.double(x))
    outer.serve(blocking=False)
    assert RPCClient(queue, service_name="outer", timeout=10).nested(3) == 6
    outer.stop()
    inner.stop()


def test_threaded_subscriptions_and_pools_are_handed_over_without_the_reader_thread(
    inline_queue,
):
    queue = inline_queue
    seen_on: list[str] = []
    done = threading.Event()

    def handler(message):
        seen_on.append(threading.current_thread().name)
        done.set()

    queue.subscribe("t", handler, threaded=True)
    queue.publish("t")
    assert done.wait(10)
    assert seen_on
    assert seen_on[0] != "reader"
    server = RPCServer(queue, service_name="svc")
    server.add_method("where", lambda: threading.current_thread().name)
    server.serve(blocking=False)
    # The pool's hand-off runs in the publisher's thread (the transport's choice for
    # non-blocking callbacks), the method on the server's own thread.
    name = RPCClient(queue, service_name="svc", timeout=10).where()
    assert name not in ("reader", threading.current_thread().name)
    server.stop()


def test_group_members_join_in_any_order_where_hand_offs_are_not_inline():
    queue = MessageQueue(ReaderThreadTransport())
    seen: list[str] = []
    try:

        async def first(message):
            seen.append("async")

        queue.subscribe("jobs", first, group="g")
        queue.subscribe("jobs", lambda m: seen.append("plain"), group="g")  # accepted
        queue.subscribe("jobs", lambda m: None, group="g", threaded=True)
    finally:
        queue.close()


def test_a_plain_member_of_a_hand_off_group_gets_a_thread_of_its_own(inline_queue):
    """Where hand-offs run on the transport's I/O thread, a plain member that joins a group of
    hand-off members is never run there: the queue gives it a thread of its own."""
    queue = inline_queue
    names: list[str] = []
    done = threading.Event()

    def plain(message):
        names.append(threading.current_thread().name)
        done.set()

    queue.subscribe("jobs", lambda m: None, group="g", threaded=True)
    handler_id = queue.subscribe("jobs", plain, group="g")
    for _ in range(4):  # round robin: the plain member gets every other message
        queue.publish("jobs")
    assert done.wait(10)
    assert names[0] not in ("reader", threading.current_thread().name)
    assert queue.unsubscribe(handler_id)  # its thread ends with it


def test_nonblocking_marks_functions_and_classes_not_bound_methods():
    def f(message):
        return None

    assert not is_nonblocking(f)
    assert nonblocking(f) is f
    assert is_nonblocking(f)

    @nonblocking
    class Handoff:
        def __call__(self, message):
            return None

    assert is_nonblocking(Handoff())

    class Holder:
        def method(self, message):
            return None

    with pytest.raises(TypeError, match="class body"):
        nonblocking(Holder().method)


def test_rpc_server_inline_runs_methods_where_the_transport_runs_nonblocking_callbacks(
    inline_queue,
):
    server = RPCServer(inline_queue, service_name="svc", inline=True)
    server.add_method("where", lambda: threading.current_thread().name)
    server.serve(blocking=False)
    # This transport runs marked callbacks at once in the sending thread: the call never
    # crosses to the reader thread, and the method runs in the caller's own thread.
    assert not server.threaded
    name = RPCClient(inline_queue, service_name="svc", timeout=10).where()
    assert name == threading.current_thread().name
    server.stop()


def test_rpc_server_inline_runs_on_the_delivery_thread_where_hand_offs_are_not_inline(queue):
    server = RPCServer(queue, service_name="svc", inline=True)
    server.add_method("where", lambda: threading.current_thread().name)
    server.serve(blocking=False)
    assert RPCClient(queue, service_name="svc", timeout=10).where() == "reader"
    server.stop()


def test_rpc_server_inline_cannot_also_be_threaded_or_use_an_executor(queue):
    with pytest.raises(ValueError, match="inline=True"):
        RPCServer(queue, inline=True, threaded=True)
    with pytest.raises(ValueError, match="inline=True"):
        RPCServer(queue, inline=True, executor=Executor(mode=ExecutionMode.THREAD))


def test_a_plain_handler_marked_nonblocking_runs_where_marked_callbacks_run(inline_queue):
    seen_on: list[str] = []

    @nonblocking
    def quick(message):
        seen_on.append(threading.current_thread().name)

    def plain(message):
        seen_on.append(threading.current_thread().name)

    inline_queue.subscribe("quick", quick)
    inline_queue.subscribe("plain", plain)
    inline_queue.publish("quick")
    inline_queue.publish("plain")
    assert wait_until(lambda: len(seen_on) == 2, timeout=10)
    assert seen_on[0] == threading.current_thread().name  # no hand-off
    assert seen_on[1] == "reader"
