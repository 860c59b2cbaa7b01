"""NatsTransport against a private nats-server: request-reply, RPC pools, interop with plain
nats-py clients, refusals, and a transport living on the application's own event loop
(``connect_async``)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge import MessageQueue, RPCClient, RPCServer
from eventforge.errors import NoRespondersError, TransportClosedError
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer, free_port
from eventforge.transports.nats import NatsTransport
from eventforge_nats.transport import NatsConnectError

pytestmark = pytest.mark.broker


# -- request / reply -----------------------------------------------------------------------


def test_queue_request_is_answered_by_a_handler_over_nats(
    make: Callable[..., NatsTransport],
) -> None:
    queue = MessageQueue(transport=make())
    seen: list[Any] = []

    @queue.on("math.add")
    def add_handler(message: Message) -> None:
        seen.append(message.payload)
        queue.reply(message, message.payload["a"] + message.payload["b"])

    response = queue.request("math.add", {"a": 10, "b": 20}, timeout=5.0)
    assert response is not None
    assert response.payload == 30
    assert seen == [{"a": 10, "b": 20}]
    queue.close()


def test_request_without_responders_fails_fast(make: Callable[..., NatsTransport]) -> None:
    transport = make()
    with pytest.raises(NoRespondersError) as info:
        transport.request(Message("nobody.listens", 1), timeout=60.0)
    assert info.value.topic == "nobody.listens"


def test_request_timeout_returns_none_and_late_reply_is_harmless(
    make: Callable[..., NatsTransport],
) -> None:
    server, client = make(), make()
    release = threading.Event()

    def slow(message: Message) -> None:
        release.wait(10)
        server.send(Message(message.reply_to or "", "late"))

    server.subscribe("slow.op", slow)
    assert client.request(Message("slow.op", 1), timeout=0.2) is None
    release.set()
    server.flush()
    # the connection keeps working after the late reply
    server.subscribe("echo", lambda m: server.send(Message(m.reply_to or "", m.payload)))
    reply = client.request(Message("echo", "ping"), timeout=5.0)
    assert reply is not None
    assert reply.payload == "ping"


def test_blocking_requests_from_many_threads_each_get_their_own_reply(
    make: Callable[..., NatsTransport],
) -> None:
    server, client = make(), make()
    server.subscribe("echo", lambda m: server.send(Message(m.reply_to or "", m.payload)))
    server.flush()
    got: dict[int, object] = {}

    def ask(n: int) -> None:
        for i in range(20):
            reply = client.request(Message("echo", [n, i]), timeout=10.0)
            assert reply is not None
            got[n * 100 + i] = reply.payload

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert got == {n * 100 + i: [n, i] for n in range(8) for i in range(20)}


def test_closing_the_transport_wakes_a_waiting_blocking_request(
    make: Callable[..., NatsTransport],
) -> None:
    server, client = make(), make()
    server.subscribe("never.answers", lambda m: None)
    server.flush()
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            client.request(Message("never.answers", 1), timeout=30.0)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    assert wait_until(lambda: client._sync_requests._waiting, timeout=10)
    client.close()
    asker.join(10)
    assert not asker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransportClosedError)


def test_request_async_from_another_loop(make: Callable[..., NatsTransport]) -> None:
    server, client = make(), make()
    server.subscribe("double", lambda m: server.send(Message(m.reply_to or "", m.payload * 2)))

    async def main() -> list[Any]:
        replies = await asyncio.gather(
            *(client.request_async(Message("double", n), 5.0) for n in range(20))
        )
        return [r.payload if r else None for r in replies]

    assert asyncio.run(main()) == [n * 2 for n in range(20)]


def test_rpc_server_pool_handles_each_call_once(make: Callable[..., NatsTransport]) -> None:
    calls: Counter[str] = Counter()
    servers = []
    for tag in ("a", "b"):
        queue = MessageQueue(transport=make())
        server = RPCServer(queue, service_name="pool")

        def square(x: int, tag: str = tag) -> int:
            calls[tag] += 1
            return x * x

        server.add_method("square", square)
        server.serve(blocking=False)
        servers.append((server, queue))
    client = RPCClient(MessageQueue(transport=make()), service_name="pool", timeout=5.0)
    results = [client.call("square", n) for n in range(60)]
    assert results == [n * n for n in range(60)]
    assert sum(calls.values()) == 60
    assert set(calls) == {"a", "b"}, f"the queue group did not spread the load: {calls}"
    for server, queue in servers:
        server.stop()
        queue.close()
    with pytest.raises(NoRespondersError):
        client.call("square", 2)


# -- interop -------------------------------------------------------------------------------


def test_plain_client_reads_the_documented_envelope(
    make: Callable[..., NatsTransport], nats_server: NatsServer, run_plain: Any
) -> None:
    transport = make()
    received: list[bytes] = []
    ready = threading.Event()

    async def listen(nc: Any) -> None:
        sub = await nc.subscribe("interop.out")
        await nc.flush()
        ready.set()
        msg = await sub.next_msg(timeout=10)
        received.append(msg.data)

    thread = threading.Thread(target=run_plain, args=(nats_server.url, listen))
    thread.start()
    assert ready.wait(10)
    sent = Message("interop.out", {"x": [1, 2]}, {"trace": "t1"}, correlation_id="c1")
    transport.send(sent)
    transport.flush()
    thread.join(15)
    envelope = json.loads(received[0])
    assert envelope["version"] == 1
    assert envelope["id"] == sent.id
    assert envelope["topic"] == "interop.out"
    assert envelope["payload"] == {"x": [1, 2]}
    assert envelope["headers"] == {"trace": "t1"}
    assert envelope["correlation_id"] == "c1"
    assert isinstance(envelope["timestamp"], float)


def test_envelope_from_a_plain_client_is_consumed(
    make: Callable[..., NatsTransport], nats_server: NatsServer, run_plain: Any
) -> None:
    transport = make()
    got: list[Message] = []
    transport.subscribe("interop.in", got.append)
    envelope = {
        "version": 1,
        "id": "from-plain-1",
        "topic": "interop.in",
        "payload": {"hello": "world"},
        "headers": {"source": "plain"},
    }

    async def publish(nc: Any) -> None:
        await nc.publish("interop.in", json.dumps(envelope).encode())
        await nc.flush()

    run_plain(nats_server.url, publish)
    assert wait_until(lambda: len(got) == 1)
    assert got[0].id == "from-plain-1"
    assert got[0].payload == {"hello": "world"}
    assert got[0].headers == {"source": "plain"}


# -- creating and refusing ----------------------------------------------------------------


def test_connect_through_the_registry(nats_server: NatsServer) -> None:
    import eventforge

    transport = eventforge.connect(f"{nats_server.url}?name=registry-test")
    try:
        assert isinstance(transport, NatsTransport)
        assert transport.settings.name == "registry-test"
    finally:
        transport.close()


def test_closed_transport_refuses_work(make: Callable[..., NatsTransport]) -> None:
    transport = make()
    transport.close()
    with pytest.raises(TransportClosedError):
        transport.request(Message("x", 1), timeout=1)
    assert transport.stats()["state"] == "closed"


def test_oversize_messages_are_refused_before_sending(make: Callable[..., NatsTransport]) -> None:
    """Row 12: a message over the server's max_payload raises at the sender, nothing is sent."""
    from eventforge.errors import FrameTooLarge
    from eventforge.workqueue import RetryPolicy

    transport = make(max_size=4 * 1024 * 1024)
    big = Message("big.topic", "x" * (2 * 1024 * 1024))
    with pytest.raises(FrameTooLarge):
        transport.send(big)
    backend = transport.work_queue_backend("big-items", RetryPolicy())
    with pytest.raises(FrameTooLarge):
        backend.put(Message("big-items", "x" * (2 * 1024 * 1024)))
    assert backend.stats()["pending"] == 0
    assert transport.stats()["sent"] == 0


# -- on the application's own event loop (connect_async) ----------------------------------


@pytest.fixture
def responder(nats_server: NatsServer) -> Iterator[NatsTransport]:
    """A classic (background-loop) transport answering ``svc.double`` and an RPC service."""
    transport = NatsTransport(nats_server.url)
    transport.subscribe(
        "svc.double",
        lambda m: transport.send(Message(m.reply_to or "", m.payload * 2)),
    )
    yield transport
    transport.close()


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 30))


def test_async_api_runs_on_the_callers_loop(nats_server: NatsServer, responder: Any) -> None:
    async def main() -> None:
        transport = await NatsTransport.connect_async(nats_server.url)
        try:
            loop = asyncio.get_running_loop()
            # The connection is this loop's, not eventforge's background loop.
            assert transport._conn.loop is loop
            got: asyncio.Future[Message] = loop.create_future()

            def on_message(message: Message) -> None:
                loop.call_soon_threadsafe(got.set_result, message)

            await transport.subscribe_async("events.created", on_message)
            await transport.send_async(Message("events.created", {"n": 1}))
            message = await asyncio.wait_for(got, 10)
            assert message.payload == {"n": 1}
            reply = await transport.request_async(Message("svc.double", 21), 10)
            assert reply is not None
            assert reply.payload == 42
            # Synchronous calls still work from another thread (they block on this loop).
            reply = await asyncio.to_thread(transport.request, Message("svc.double", 5), 10)
            assert reply is not None
            assert reply.payload == 10
        finally:
            await transport.close_async()

    run(main)


def test_blocking_calls_on_the_bound_loop_raise_a_clear_error(nats_server: NatsServer) -> None:
    async def main() -> None:
        transport = await NatsTransport.connect_async(nats_server.url)
        try:
            with pytest.raises(RuntimeError, match="_async"):
                transport.request(Message("svc.none", 1), 1)
            with pytest.raises(RuntimeError, match="_async"):
                transport.flush()
            with pytest.raises(RuntimeError, match="_async"):
                transport.receive("svc.none", 1)
            # send and subscribe never block, so they work on the loop itself.
            loop = asyncio.get_running_loop()
            got: asyncio.Future[Message] = loop.create_future()
            transport.subscribe("later", lambda m: loop.call_soon_threadsafe(got.set_result, m))
            for _ in range(200):  # the subscription becomes active a moment later
                transport.send(Message("later", "x"))
                await transport.flush_async()
                if got.done():
                    break
                await asyncio.sleep(0.01)
            assert (await asyncio.wait_for(got, 10)).payload == "x"
        finally:
            await transport.close_async()

    run(main)


def test_unsubscribed_before_it_became_active_leaves_no_subscription(
    nats_server: NatsServer,
) -> None:
    async def main() -> None:
        transport = await NatsTransport.connect_async(nats_server.url)
        try:
            sid = transport.subscribe("gone", lambda m: None)
            assert transport.unsubscribe(sid)
            await asyncio.sleep(0.2)
            assert transport.stats()["subscriptions"] == 0
            assert not transport._conn.client._subs  # nothing left at the NATS client
        finally:
            await transport.close_async()

    run(main)


def test_rpc_client_call_async_over_a_bound_transport(nats_server: NatsServer) -> None:
    server_queue = MessageQueue(NatsTransport(nats_server.url))
    server = RPCServer(server_queue, service_name="math")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)

    async def main() -> None:
        async with MessageQueue(await NatsTransport.connect_async(nats_server.url)) as queue:
            client = RPCClient(queue, service_name="math", timeout=10)
            assert await client.call_async("add", 2, 3) == 5
            results = await asyncio.gather(*(client.call_async("add", i, i) for i in range(20)))
            assert results == [2 * i for i in range(20)]
        assert queue.transport._conn.state == "closed"  # type: ignore[attr-defined]

    try:
        run(main)
    finally:
        server.stop()
        server_queue.close()


def test_connect_async_failure_is_reported() -> None:
    async def main() -> None:
        with pytest.raises(NatsConnectError):
            await NatsTransport.connect_async(
                f"nats://127.0.0.1:{free_port()}", connect_attempts=1, connect_timeout=0.5
            )

    run(main)
