"""NatsTransport.connect_async: a transport living on the application's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge import MessageQueue, RPCClient, RPCServer
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.transports.nats import NatsTransport

pytestmark = pytest.mark.broker


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
    from eventforge.testing.brokers import free_port
    from eventforge_nats.transport import NatsConnectError

    async def main() -> None:
        with pytest.raises(NatsConnectError):
            await NatsTransport.connect_async(
                f"nats://127.0.0.1:{free_port()}", connect_attempts=1, connect_timeout=0.5
            )

    run(main)
