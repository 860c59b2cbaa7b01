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
from eventforge.transport import Callback, Capability, Transport


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
