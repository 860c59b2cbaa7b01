"""NatsTransport against a private nats-server: request-reply, queue groups, RPC pools,
malformed input, interop with plain nats-py clients, connection errors."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.errors import NoRespondersError, TransportClosedError
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer, free_port
from eventforge.transports.nats import NatsTransport
from eventforge_nats.transport import NatsAuthError, NatsConnectError

pytestmark = pytest.mark.broker


@pytest.fixture
def make(nats_server: NatsServer) -> Iterator[Callable[..., NatsTransport]]:
    made: list[NatsTransport] = []

    def factory(**options: Any) -> NatsTransport:
        transport = NatsTransport(nats_server.url, **options)
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close()


def run_plain(url: str, coro_fn: Callable[[Any], Any]) -> Any:
    """Run ``coro_fn(nc)`` with a plain nats-py connection (an outsider's client)."""
    import nats

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await coro_fn(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


# -- request / reply -----------------------------------------------------------------------


def test_seed_snippet_over_nats(make: Callable[..., NatsTransport]) -> None:
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
    from eventforge import RPCClient, RPCServer

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


# -- groups, coroutines, bad input ---------------------------------------------------------


def test_group_spans_transports(make: Callable[..., NatsTransport]) -> None:
    a, b, publisher = make(), make(), make()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    a.subscribe("jobs.*", lambda m: got["a"].append(m.payload), group="workers")
    b.subscribe("jobs.*", lambda m: got["b"].append(m.payload), group="workers")
    for n in range(100):
        publisher.send(Message("jobs.x", n))
    publisher.flush()
    assert wait_until(lambda: len(got["a"]) + len(got["b"]) == 100)
    assert sorted(got["a"] + got["b"]) == list(range(100))
    assert got["a"]
    assert got["b"]


def test_coroutine_callback_runs_on_the_subscribing_loop(
    make: Callable[..., NatsTransport],
) -> None:
    transport = make()

    async def main() -> tuple[Any, bool]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Any, bool]] = loop.create_future()

        async def handler(message: Message) -> None:
            if not done.done():
                done.set_result((message.payload, asyncio.get_running_loop() is loop))

        await transport.subscribe_async("coro.topic", handler)
        await transport.send_async(Message("coro.topic", "hi"))
        return await asyncio.wait_for(done, 10)

    assert asyncio.run(main()) == ("hi", True)


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"\xff\xfe\x00",
        b'{"version": 1, "topic": "bad.in", "payload": 1}',
        b'{"version": 99, "id": "x", "topic": "bad.in", "payload": 1}',
        b'{"version": 1, "id": 5, "topic": "bad.in", "payload": 1}',
        b"[1, 2, 3]",
        b"9" * 5000,
    ],
)
def test_malformed_envelopes_are_counted_and_subscriber_survives(
    make: Callable[..., NatsTransport], nats_server: NatsServer, garbage: bytes
) -> None:
    transport = make()
    got: list[Any] = []
    transport.subscribe("bad.in", lambda m: got.append(m.payload))

    async def publish(nc: Any) -> None:
        await nc.publish("bad.in", garbage)
        await nc.flush()

    run_plain(nats_server.url, publish)
    assert wait_until(lambda: transport.stats()["decode_errors"] == 1)
    transport.send(Message("bad.in", "valid"))
    assert wait_until(lambda: got == ["valid"])


def test_slow_subscriber_drops_are_counted(make: Callable[..., NatsTransport]) -> None:
    receiver, sender = make(max_pending=5), make()
    release = threading.Event()
    got: list[int] = []

    def slow(message: Message) -> None:
        release.wait(10)
        got.append(message.payload)

    receiver.subscribe("firehose", slow)
    for n in range(200):
        sender.send(Message("firehose", n))
    sender.flush()
    assert wait_until(lambda: receiver.stats()["delivered"] + receiver.stats()["dropped"] >= 150)
    release.set()
    assert wait_until(lambda: receiver.stats()["delivery_queue"] == 0)
    stats = receiver.stats()
    assert stats["dropped"] > 0
    assert len(got) + stats["dropped"] == 200, (len(got), stats)


# -- interop -------------------------------------------------------------------------------


def test_plain_client_reads_the_documented_envelope(
    make: Callable[..., NatsTransport], nats_server: NatsServer
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
    make: Callable[..., NatsTransport], nats_server: NatsServer
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


# -- connecting ----------------------------------------------------------------------------


def test_wrong_password_fails_fast_without_leaking_it(nats_server_factory: Any) -> None:
    server = nats_server_factory(user="alice", password="right-pw", jetstream=False)
    with pytest.raises(NatsAuthError) as info:
        NatsTransport(f"nats://alice:wrong-pw@127.0.0.1:{server.port}", connect_attempts=50)
    assert "Authorization Violation" in str(info.value)
    assert "wrong-pw" not in str(info.value)
    good = NatsTransport(f"nats://127.0.0.1:{server.port}", user="alice", password="right-pw")
    assert "right-pw" not in repr(good)
    good.close()


def test_wrong_token_fails_fast(nats_server_factory: Any) -> None:
    server = nats_server_factory(token="tok-123", jetstream=False)
    with pytest.raises(NatsAuthError):
        NatsTransport(f"nats://127.0.0.1:{server.port}", token="nope", connect_attempts=50)
    good = NatsTransport(f"nats://127.0.0.1:{server.port}", token="tok-123")
    good.close()


def test_unreachable_server_fails_after_bounded_attempts() -> None:
    port = free_port()
    with pytest.raises(NatsConnectError, match="after 2 attempt") as info:
        NatsTransport(f"nats://127.0.0.1:{port}", connect_attempts=2, connect_timeout=0.5)
    assert not isinstance(info.value, NatsAuthError)


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


def test_credentials_file_without_nkeys_is_a_clear_error(
    nats_server: NatsServer, tmp_path: Any
) -> None:
    import importlib.util

    from eventforge.errors import ConfigurationError

    if importlib.util.find_spec("nkeys") is not None:
        pytest.skip("nkeys is installed: the missing-package error cannot happen here")
    creds = tmp_path / "app.creds"
    creds.write_text("not used")
    with pytest.raises(ConfigurationError, match=r"pip install 'eventforge-nats\[nkeys\]'"):
        NatsTransport(nats_server.url, credentials=str(creds))
