"""``put_many`` on JetStream: a pipelined batch against private nats-server processes.

``put_many`` publishes every item with a reply subject on one acknowledgement inbox of the
backend and waits for the batch with one deadline. These tests check what that must keep:
each item stored exactly once (``Nats-Msg-Id`` deduplicates the retries after lost
acknowledgements, a paused or restarted server, or a missing stream), JetStream error replies
and oversized items reported as such, and the inbox working again after a reconnect.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventforge.errors import FrameTooLarge, TransportError
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.workqueue import RetryPolicy
from eventforge_nats import _put
from eventforge_nats.jetstream import JetStreamWorkQueue, queue_names
from eventforge_nats.transport import NatsTransport

pytestmark = [pytest.mark.broker]

STALL_S = 30.0
FAST = {"reconnect_time_wait": 0.1, "ping_interval": 1.0, "connect_timeout": 1.0}


def admin(url: str, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(jetstream_context)`` on a plain nats-py connection (stream administration)."""
    import nats

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def stored_count(url: str, name: str) -> int:
    async def count(js: Any) -> int:
        info = await js.stream_info(queue_names(name)["stream"])
        return int(info.state.messages)

    return int(admin(url, count))


def drain_ids(backend: JetStreamWorkQueue, expected: int) -> list[str]:
    """Fetch and ack until ``expected`` items came, then check that nothing else is queued."""
    ids: list[str] = []
    deadline = time.monotonic() + STALL_S
    while len(ids) < expected:
        assert time.monotonic() < deadline, f"only {len(ids)} of {expected} items delivered"
        for delivery in backend.fetch(100, 1.0):
            ids.append(delivery.message.id)
            delivery.ack()
    assert backend.fetch(100, 0.3) == []
    return ids


def new_backend(transport: NatsTransport, name: str) -> JetStreamWorkQueue:
    backend = transport.work_queue_backend(name, RetryPolicy())
    assert isinstance(backend, JetStreamWorkQueue)
    return backend


def test_put_many_stores_every_item_once(nats_server: NatsServer) -> None:
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-basic")
    messages = [Message("pipe-basic", {"n": n}) for n in range(250)]
    backend.put_many(messages[:100])
    backend.put_many(messages[100:])
    backend.put_many([])
    assert stored_count(nats_server.url, "pipe-basic") == 250
    assert sorted(drain_ids(backend, 250)) == sorted(m.id for m in messages)
    assert backend.counters["put"] == 250
    assert backend.counters["put_retries"] == 0
    transport.close()


def test_closing_a_backend_releases_its_acknowledgement_inbox(nats_server: NatsServer) -> None:
    """A long-lived transport that opens and closes work queues keeps no inbox per queue."""
    transport = NatsTransport(nats_server.url)
    try:
        client = transport._conn.client
        counts = []
        for round_ in range(4):
            name = f"pipe-close-{round_}"
            backend = new_backend(transport, name)
            backend.put_many([Message(name, n) for n in range(5)])
            backend.close()
            counts.append(len(client._subs))
        # The first round leaves nats-py's own request inbox behind; nothing per queue.
        assert counts[1:] == [counts[0]] * 3
    finally:
        transport.close()


def test_put_many_from_threads_shares_one_inbox(nats_server: NatsServer) -> None:
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-threads")
    batches = [[Message("pipe-threads", {"t": t, "n": n}) for n in range(50)] for t in range(8)]
    threads = [threading.Thread(target=backend.put_many, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STALL_S)
    assert backend.counters["put"] == 400
    expected = sorted(m.id for b in batches for m in b)
    assert sorted(drain_ids(backend, 400)) == expected
    transport.close()


def test_lost_acknowledgements_are_retried_and_deduplicated(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every third acknowledgement is dropped on arrival (as if lost on the way): those items
    are published again with the same Nats-Msg-Id, JetStream answers "duplicate", and each
    item is stored once."""
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-lost-acks")
    backend.put_timeout = 10.0
    on_reply = _put.AckInbox._on_reply
    seen = {"replies": 0, "dropped": 0}
    dropped_tokens: set[str] = set()

    async def lossy(self: _put.AckInbox, msg: Any) -> None:
        seen["replies"] += 1
        token = msg.subject.rsplit(".", 1)[1]
        if seen["replies"] % 3 == 0 and len(dropped_tokens) < 40:
            dropped_tokens.add(token)
            seen["dropped"] += 1
            return
        await on_reply(self, msg)

    monkeypatch.setattr(_put.AckInbox, "_on_reply", lossy)
    messages = [Message("pipe-lost-acks", {"n": n}) for n in range(100)]
    backend.put_many(messages)
    counters = backend.counters
    print(f"lost acks: dropped={seen['dropped']} {counters}")
    assert seen["dropped"] >= 30
    assert counters["put"] == 100
    assert counters["put_retries"] >= seen["dropped"]
    assert counters["put_duplicates"] >= 1
    assert stored_count(nats_server.url, "pipe-lost-acks") == 100
    assert sorted(drain_ids(backend, 100)) == sorted(m.id for m in messages)
    transport.close()


def test_put_many_under_a_paused_server_is_retried_and_stored_once(
    nats_server_factory: Any,
) -> None:
    """The server is paused (SIGSTOP) under a batch: no acknowledgement comes, the batch is
    published again with the same ids, and after SIGCONT every item is stored exactly once."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url)
    backend = new_backend(transport, "pipe-paused")
    messages = [Message("pipe-paused", {"n": n}) for n in range(100)]
    outcome: list[BaseException | None] = []

    def put() -> None:
        try:
            backend.put_many(messages)
        except BaseException as exc:  # reported by the assertion on the outcome
            outcome.append(exc)
        else:
            outcome.append(None)

    server.pause()
    try:
        putter = threading.Thread(target=put, daemon=True)
        putter.start()
        deadline = time.monotonic() + STALL_S
        while backend.counters["put_retries"] < 100:
            assert time.monotonic() < deadline, "the batch was never retried"
            time.sleep(0.02)
    finally:
        server.resume()
    putter.join(STALL_S)
    assert outcome == [None], outcome
    assert backend.counters["put"] == 100
    assert stored_count(server.url, "pipe-paused") == 100
    assert sorted(drain_ids(backend, 100)) == sorted(m.id for m in messages)
    transport.close()


def test_put_many_across_a_server_kill_loses_no_acknowledged_item(
    nats_server_factory: Any,
) -> None:
    """SIGKILL + restart while batches are being put: every acknowledged batch is stored, and
    the batches in flight are stored once (retried with the same ids) or reported."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url, **FAST)
    backend = new_backend(transport, "pipe-kill")
    acknowledged: list[Message] = []
    unknown: list[Message] = []
    killed = threading.Event()
    restarted = threading.Event()

    def fault() -> None:
        while backend.counters["put"] < 1000:
            time.sleep(0.001)
        server.kill()  # lands while a batch is in flight
        killed.set()
        time.sleep(0.5)
        server.restart()
        restarted.set()

    killer = threading.Thread(target=fault, daemon=True)
    killer.start()
    after = 0
    deadline = time.monotonic() + 4 * STALL_S
    for batch_no in range(100_000):
        assert time.monotonic() < deadline, "the fault never happened"
        if restarted.is_set():
            after += 1
            if after > 10:
                break
        batch = [Message("pipe-kill", {"b": batch_no, "n": n}) for n in range(50)]
        try:
            backend.put_many(batch)
        except TransportError as exc:
            print(f"batch {batch_no}: {exc}")
            unknown.extend(batch)
        else:
            acknowledged.extend(batch)
    killer.join(STALL_S)
    counters = backend.counters
    print(
        f"put_many kill/restart: acknowledged={len(acknowledged)} unknown={len(unknown)} "
        f"put_retries={counters['put_retries']} duplicates={counters['put_duplicates']}"
    )
    assert counters["put"] == len(acknowledged)
    ids = drain_ids(backend, stored_count(server.url, "pipe-kill"))
    assert len(ids) == len(set(ids)), "an item was stored twice"
    assert {m.id for m in acknowledged} <= set(ids), "an acknowledged item was lost"
    assert set(ids) <= {m.id for m in acknowledged + unknown}
    transport.close()


def test_inbox_survives_a_reconnect(nats_server_factory: Any) -> None:
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url, **FAST)
    backend = new_backend(transport, "pipe-reconnect")
    backend.put_many([Message("pipe-reconnect", n) for n in range(10)])
    inbox = backend._producer._acks
    assert inbox is not None
    server.kill()
    server.restart()
    deadline = time.monotonic() + STALL_S
    while transport.stats()["state"] != "connected":
        assert time.monotonic() < deadline, "never reconnected"
        time.sleep(0.02)
    retries = backend.counters["put_retries"]
    backend.put_many([Message("pipe-reconnect", n) for n in range(10, 60)])
    assert backend._producer._acks is inbox, "the inbox was replaced instead of resubscribed"
    assert backend.counters["put_retries"] == retries, "acknowledgements went missing"
    assert backend.counters["put"] == 60
    assert len(drain_ids(backend, 60)) == 60
    transport.close()


def test_jetstream_error_reply_is_a_clear_refusal(nats_server: NatsServer) -> None:
    """An item the stream refuses (here: over the stream's max_msg_size) is reported with
    JetStream's reason and not retried; the other items of the batch are stored."""
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-refused")

    async def limit(js: Any) -> None:
        info = await js.stream_info(backend.stream)
        info.config.max_msg_size = 1024
        await js.update_stream(info.config)

    admin(nats_server.url, limit)
    small = [Message("pipe-refused", n) for n in range(3)]
    big = Message("pipe-refused", "x" * 4096)
    with pytest.raises(TransportError, match=r"refused 1 of 4 items .*err_code=10054") as info:
        backend.put_many([small[0], big, *small[1:]])
    print(info.value)
    assert "not stored" in str(info.value)
    assert backend.counters["put_retries"] == 0
    assert backend.counters["put"] == 3
    assert sorted(drain_ids(backend, 3)) == sorted(m.id for m in small)
    transport.close()


def test_item_over_max_payload_refuses_the_whole_batch(nats_server: NatsServer) -> None:
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-too-big")
    limit = transport._conn.client.max_payload
    batch = [Message("pipe-too-big", 1), Message("pipe-too-big", "x" * (limit + 1))]
    with pytest.raises(FrameTooLarge):
        backend.put_many(batch)
    assert stored_count(nats_server.url, "pipe-too-big") == 0
    transport.close()


def test_missing_stream_is_retried_until_it_exists(nats_server: NatsServer) -> None:
    """No stream on the subject (a 503 no-responders reply): the batch is published again
    until the stream is back, within put_timeout."""
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-no-stream")
    backend.put_timeout = 20.0

    async def delete(js: Any) -> None:
        await js.delete_stream(backend.stream)

    admin(nats_server.url, delete)

    def recreate() -> None:
        time.sleep(0.5)
        other = NatsTransport(nats_server.url)
        other.work_queue_backend("pipe-no-stream", RetryPolicy())  # creates the stream again
        other.close()

    threading.Thread(target=recreate, daemon=True).start()
    messages = [Message("pipe-no-stream", n) for n in range(20)]
    backend.put_many(messages)
    assert backend.counters["put_retries"] >= 20
    assert stored_count(nats_server.url, "pipe-no-stream") == 20
    transport.close()


def test_unacknowledged_batch_fails_after_put_timeout(nats_server: NatsServer) -> None:
    transport = NatsTransport(nats_server.url)
    backend = new_backend(transport, "pipe-timeout")
    backend.put_timeout = 1.0

    async def delete(js: Any) -> None:
        await js.delete_stream(backend.stream)

    admin(nats_server.url, delete)
    with pytest.raises(TransportError, match=r"5 of 5 items .* were not acknowledged"):
        backend.put_many([Message("pipe-timeout", n) for n in range(5)])
    assert backend.counters["put_retries"] >= 5
    assert backend._producer._acks is not None
    assert not backend._producer._acks._waiting, "replies of a finished batch are still awaited"
    transport.close()


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b'{"stream":"EF_WQ_q","seq":7}', _put.STORED),
        (b'{"stream":"EF_WQ_q","seq":7,"duplicate": true}', _put.DUPLICATE),
        (b'{"stream":"EF_WQ_q","seq":7,"duplicate":true}', _put.DUPLICATE),
        (b'{"stream":"EF_WQ_q","seq":7,"duplicate":false}', _put.STORED),
        (b'{"stream":"EF_WQ_q","domain":"hub","seq":7,"duplicate":true}', _put.DUPLICATE),
        (b'{"seq":7,"stream":"EF_WQ_q"}', _put.STORED),
        (
            b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}',
            "code=503 err_code=10077: maximum messages exceeded",
        ),
        (b"{}", None),
        (b"not json", None),
    ],
)
def test_pub_ack_replies_are_read_exactly(reply: bytes, outcome: object) -> None:
    assert _put.pub_ack_outcome(reply) == outcome
