"""Fault tests against private nats-server processes (RELIABILITY.md, columns N-C and N-JS).

Each test kills, restarts or feeds bad input to a real nats-server, records every publish and
delivery in a :class:`~eventforge.testing.history.History`, prints the one-line summary
(lost / duplicates / recover time) and fails on a stall, never on a duration.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.testing.history import History, StallWatchdog
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_nats.jetstream import queue_names
from eventforge_nats.transport import NatsTransport

pytestmark = [pytest.mark.broker, pytest.mark.slow]

STALL_S = 30.0
FAST = {"reconnect_time_wait": 0.1, "ping_interval": 1.0, "connect_timeout": 1.0}


def wait_for_seqs(history: History, seqs: Iterable[int], *, stall_s: float = STALL_S) -> None:
    """Block until every seq in ``seqs`` was delivered; fail when progress stalls."""
    wanted = set(seqs)
    while True:
        missing = wanted - set(history.deliveries)
        if not missing:
            return
        idle = time.monotonic() - history.last_progress
        if idle > stall_s:
            raise AssertionError(
                f"stalled: no new delivery for {idle:.1f}s; {len(missing)} still missing "
                f"(first: {sorted(missing)[:5]})"
            )
        time.sleep(0.02)


def wait_state(transports: Iterable[NatsTransport], state: str, timeout: float = STALL_S) -> None:
    deadline = time.monotonic() + timeout
    for transport in transports:
        while transport.stats()["state"] != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{transport!r} never reached state {state!r}")
            time.sleep(0.01)


def report(name: str, history: History, **extra: Any) -> str:
    result = history.check()
    result.extra.update(extra)
    line = f"{name}: {result.summary()}"
    print(line)
    return line


def plain(url: str, fn: Callable[[Any], Any]) -> Any:
    import nats

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await fn(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


# -- NATS core ------------------------------------------------------------------------------


def test_core_subscription_comes_back_after_server_kill(nats_server_factory: Any) -> None:
    """N-C row 1: SIGKILL + restart mid-stream; loss only inside the window, subs restored."""
    server: NatsServer = nats_server_factory(jetstream=False)
    sub = NatsTransport(server.url, **FAST)
    pub = NatsTransport(server.url, **FAST)
    history = History()
    sub.subscribe("fault.core", lambda m: history.delivered(m.payload))
    sub.flush()
    seq = 0

    def publish(count: int) -> list[int]:
        nonlocal seq
        sent = []
        for _ in range(count):
            history.invoke(seq)
            try:
                pub.send(Message("fault.core", seq))
                history.published(seq)
                sent.append(seq)
            except TransportError:
                history.publish_failed(seq)
            seq += 1
            time.sleep(0.001)
        return sent

    before = publish(200)
    pub.flush()
    wait_for_seqs(history, before)
    history.fault_started()
    server.kill()
    publish(100)  # while down: buffered up to pending_size, or refused (counted)
    server.restart()
    wait_state([sub, pub], "connected")
    history.fault_ended()
    time.sleep(1.1)  # History counts publishes more than 1 s after the fault as outside it
    after = publish(200)
    pub.flush()
    wait_for_seqs(history, after)
    line = report(
        "N-C kill/restart",
        history,
        reconnects=sub.stats()["reconnects"],
        publish_errors=pub.stats()["publish_errors"],
    )
    result = history.check()
    assert result.lost_outside_fault_window == 0, line
    assert result.unexpected == 0, line
    assert result.duplicates == 0, line
    assert sub.stats()["reconnects"] >= 1
    assert pub.stats()["reconnects"] >= 1
    sub.close()
    pub.close()


# -- JetStream ------------------------------------------------------------------------------


def test_jetstream_acknowledged_puts_survive_server_kill(nats_server_factory: Any) -> None:
    """N-JS row 1: lost == 0 for every acknowledged put across SIGKILL + restart."""
    server: NatsServer = nats_server_factory()
    producer_t = NatsTransport(server.url, **FAST)
    consumer_t = NatsTransport(server.url, **FAST)
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.05, jitter=0.0)
    producer = producer_t.work_queue_backend("fault-js", policy)
    consumer = consumer_t.work_queue_backend("fault-js", policy)
    history = History()
    stop = threading.Event()
    total = 600

    def consume() -> None:
        while not stop.is_set():
            try:
                deliveries = consumer.fetch(20, 0.5)
            except TransportError:
                time.sleep(0.05)
                continue
            for delivery in deliveries:
                history.delivered(delivery.message.payload)
                delivery.ack()

    def produce() -> None:
        for seq in range(total):
            history.invoke(seq)
            if seq == total // 2:
                history.fault_started()
                server.kill()
                threading.Thread(target=restart, daemon=True).start()
            try:
                producer.put(Message("fault-js", seq))
                history.published(seq)
            except TransportError:
                history.publish_failed(seq, ambiguous=True)

    def restart() -> None:
        time.sleep(0.5)
        server.restart()
        history.fault_ended()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    produce()
    watchdog = StallWatchdog(history, STALL_S)
    acked = sorted(history.ok)
    wait_for_seqs(history, acked, stall_s=watchdog.stall_s)
    stop.set()
    reader.join(10)
    counters = producer.stats()
    line = report(
        "N-JS kill/restart",
        history,
        put_retries=counters["put_retries"],
        deduplicated=counters["put_duplicates"],
    )
    result = history.check()
    assert result.lost == 0, line
    assert result.unexpected == 0, line
    assert result.published_ok + result.published_unknown == total
    producer_t.close()
    consumer_t.close()


def test_idle_pull_consumer_resumes_after_restart(nats_server_factory: Any) -> None:
    """N-JS row 2 (nats-py#504): a consumer idle during a restart gets the next message."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url, **FAST)
    backend = transport.work_queue_backend("idle-js", RetryPolicy())
    history = History()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            try:
                for delivery in backend.fetch(1, 1.0):
                    history.delivered(delivery.message.payload)
                    delivery.ack()
            except TransportError:
                time.sleep(0.05)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    history.invoke(0)
    backend.put(Message("idle-js", 0))
    history.published(0)
    wait_for_seqs(history, [0])
    time.sleep(0.3)  # the consumer is now parked in a long poll
    history.fault_started()
    server.restart()
    wait_state([transport], "connected")
    history.fault_ended()
    history.invoke(1)
    backend.put(Message("idle-js", 1))
    history.published(1)
    wait_for_seqs(history, [1])
    stop.set()
    reader.join(10)
    line = report("N-JS idle pull restart", history, pulls_lost=backend.stats()["pulls_lost"])
    assert history.check().lost == 0, line
    transport.close()


_WORKER = """
import sys, time
from eventforge.workqueue import RetryPolicy
from eventforge_nats.transport import NatsTransport
transport = NatsTransport(sys.argv[1])
backend = transport.work_queue_backend("crash-js", RetryPolicy(max_attempts=5))
while True:
    for delivery in backend.fetch(1, 1.0):
        print(delivery.message.id, delivery.attempt, flush=True)
        time.sleep(120)  # killed here, mid-handler
"""


def test_consumer_killed_mid_handler_is_redelivered(nats_server_factory: Any) -> None:
    """N-JS row 3: SIGKILL the consuming process mid-handler; redelivered after ack_wait."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url, ack_wait=1.0)
    backend = transport.work_queue_backend("crash-js", RetryPolicy(max_attempts=5))
    message = Message("crash-js", {"job": 1})
    backend.put(message)
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline().split()
        assert line == [message.id, "1"], line
        worker.kill()
        worker.wait(10)
        killed_at = time.monotonic()
        redelivered = backend.fetch(1, STALL_S)
        redelivery_s = time.monotonic() - killed_at
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert len(redelivered) == 1
    delivery = redelivered[0]
    assert delivery.message.id == message.id
    assert delivery.attempt == 2
    delivery.ack()
    print(
        f"N-JS consumer SIGKILL: lost=0 attempt={delivery.attempt} redelivery_s={redelivery_s:.2f}"
    )
    transport.close()


def test_poison_message_lands_in_our_dead_letter_subject(nats_server_factory: Any) -> None:
    """N-JS row 4: retried per policy with nak delays, then stored in our DLQ and TERMinated."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.05, jitter=0.0)
    queue = WorkQueue("poison-js", transport, retry=policy)
    poison_id = queue.put("poison")
    for n in range(20):
        queue.put(n)
    attempts: list[int] = []
    healthy: list[int] = []

    def handler(message: Message) -> None:
        if message.payload == "poison":
            attempts.append(1)
            raise ValueError("always fails")
        healthy.append(message.payload)

    consumer = queue.consume(handler, concurrency=2)
    history = History()
    deadline = time.monotonic() + STALL_S
    while not (len(queue.dead_letters()) == 1 and len(healthy) == 20):
        assert time.monotonic() < deadline, f"stalled: {len(healthy)} healthy, {attempts}"
        time.sleep(0.02)
    consumer.stop()
    assert len(attempts) == 3
    assert sorted(healthy) == list(range(20))
    names = queue_names("poison-js")

    async def read_dlq(nc: Any) -> tuple[dict[str, Any], dict[str, str]]:
        js = nc.jetstream()
        raw = await js.get_msg(names["dlq_stream"], 1)
        return json.loads(raw.data), dict(raw.headers or {})

    envelope, headers = plain(server.url, read_dlq)
    assert envelope["id"] == poison_id
    assert headers["Eventforge-Attempts"] == "3"
    assert "3 of 3" in headers["Eventforge-Reason"]
    stats = queue.stats
    assert stats["pending"] == 0
    print(
        f"N-JS poison: attempts={len(attempts)} dlq_count={stats['dead_letters']} "
        f"healthy_acked={stats['acked']} {history.check().summary()}"
    )
    queue.close()
    transport.close()


def test_malformed_item_is_dead_lettered_not_redelivered(nats_server_factory: Any) -> None:
    """N-JS row 11: garbage published by a plain client is TERMinated into the DLQ; work goes on."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url)
    queue = WorkQueue("garbage-js", transport, retry=RetryPolicy(max_attempts=3))
    subject = queue_names("garbage-js")["subject"]

    async def publish(nc: Any) -> None:
        js = nc.jetstream()
        await js.publish(subject, b"\x00 not an envelope")
        await js.publish(subject, json.dumps({"version": 7, "id": "x"}).encode())

    plain(server.url, publish)
    queue.put("valid")
    got: list[Any] = []
    consumer = queue.consume(lambda m: got.append(m.payload))
    deadline = time.monotonic() + STALL_S
    while not (got == ["valid"] and len(queue.dead_letters()) == 2):
        assert time.monotonic() < deadline, f"stalled: got={got} dlq={queue.dead_letters()}"
        time.sleep(0.02)
    consumer.stop()
    letters = queue.dead_letters()
    assert all("malformed item" in letter.reason for letter in letters)
    stats = queue.stats
    assert stats["malformed"] == 2
    assert (stats["pending"], stats["in_flight"]) == (0, 0)
    assert queue.replay() == 0  # malformed letters are kept, never replayed into a loop
    print(f"N-JS malformed: dlq_count={len(letters)} malformed={stats['malformed']} others_ok=True")
    queue.close()
    transport.close()


def test_retried_put_with_the_same_id_is_stored_once(nats_server_factory: Any) -> None:
    """N-JS row 6: a put repeated with the same message id (a retry after a lost PubAck) is
    deduplicated by the server through ``Nats-Msg-Id``."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url)
    backend = transport.work_queue_backend("dedupe-js", RetryPolicy())
    message = Message("dedupe-js", "once")
    backend.put(message)
    backend.put(message)  # what a retry after a lost acknowledgement sends
    first = backend.fetch(10, 5.0)
    assert [d.message.id for d in first] == [message.id]
    first[0].ack()
    assert backend.fetch(10, 0.3) == []
    assert backend.stats()["put_duplicates"] == 1
    transport.close()


def test_publish_while_down_is_buffered_then_refused(nats_server_factory: Any) -> None:
    """N-C row 1: while reconnecting, publishes fill ``pending_size`` and then raise (counted),
    never "OK then vanished" without a trace."""
    server: NatsServer = nats_server_factory(jetstream=False)
    pub = NatsTransport(server.url, pending_size=4096, **FAST)
    server.kill()
    wait_state([pub], "reconnecting")
    accepted = 0
    with pytest.raises(TransportError, match="pending_size"):  # noqa: PT012
        for n in range(10_000):
            pub.send(Message("down.topic", {"n": n, "pad": "x" * 100}))
            accepted += 1
    refused = 1
    stats = pub.stats()
    print(f"N-C publish while down: accepted={accepted} refused={refused} stats={stats}")
    assert refused == 1
    assert 0 < accepted < 10_000
    assert stats["publish_errors"] == 1, "accepted publishes were dropped after the fact"
    server.start()
    wait_state([pub], "connected")
    pub.send(Message("down.topic", "after"))
    pub.flush()
    pub.close()


def test_put_whose_ack_was_lost_is_retried_and_deduplicated(nats_server_factory: Any) -> None:
    """N-JS row 6: the server is paused (SIGSTOP) under a put; the PubAck never comes, the put
    is retried with the same Nats-Msg-Id, and after SIGCONT the item is stored exactly once."""
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url)
    backend = transport.work_queue_backend("ackloss-js", RetryPolicy())
    message = Message("ackloss-js", "exactly once")
    outcome: list[BaseException | None] = []
    server.pause()
    try:
        putter = threading.Thread(
            target=lambda: outcome.append(_try(lambda: backend.put(message))), daemon=True
        )
        putter.start()
        deadline = time.monotonic() + STALL_S
        while backend.counters["put_retries"] < 1:
            assert time.monotonic() < deadline, "the put was never retried"
            time.sleep(0.02)
    finally:
        server.resume()
    putter.join(STALL_S)
    assert outcome == [None], outcome
    first = backend.fetch(10, 10.0)
    assert [d.message.id for d in first] == [message.id]
    first[0].ack()
    assert backend.fetch(10, 0.5) == []
    counters = backend.counters
    print(
        f"N-JS lost PubAck: lost=0 dup=0 put_retries={counters['put_retries']} "
        f"deduplicated={counters['put_duplicates']}"
    )
    assert counters["put_duplicates"] >= 1
    transport.close()


def _try(fn: Callable[[], Any]) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:  # reported by the assertion on the outcome
        return exc
    return None


def test_credentials_refused_on_reconnect_are_loud(nats_server_factory: Any) -> None:
    """N-C row 15: the server comes back with other credentials; the transport does not
    pretend to work: state ``auth_failed``, refusals counted and logged as errors."""
    server: NatsServer = nats_server_factory(user="app", password="old-pw", jetstream=False)
    transport = NatsTransport(server.url, user="app", password="old-pw", **FAST)
    server.kill()
    rotated = NatsServer(port=server.port, user="app", password="new-pw", jetstream=False)
    rotated.start()
    try:
        wait_state([transport], "auth_failed")
        stats = transport.stats()
        print(
            f"N-C credentials refused on reconnect: {stats['state']} auth_errors={stats['auth_errors']}"
        )
        assert stats["auth_errors"] >= 1
        assert "old-pw" not in repr(stats)
    finally:
        transport.close()
        rotated.cleanup()


def test_paused_server_is_detected_and_recovered(nats_server_factory: Any) -> None:
    """N-C row 7: SIGSTOP leaves the socket open but silent; the pings notice it within
    ``ping_interval x (max_outstanding_pings + 1)``, the client reconnects after SIGCONT and the
    subscription works again."""
    server: NatsServer = nats_server_factory(jetstream=False)
    options = {**FAST, "ping_interval": 0.5, "max_outstanding_pings": 2}
    sub = NatsTransport(server.url, **options)
    pub = NatsTransport(server.url, **options)
    history = History()
    sub.subscribe("stall.topic", lambda m: history.delivered(m.payload))
    history.invoke(0)
    pub.send(Message("stall.topic", 0))
    history.published(0)
    wait_for_seqs(history, [0])
    history.fault_started()
    server.pause()
    try:
        deadline = time.monotonic() + STALL_S
        while sub.stats()["state"] == "connected":
            assert time.monotonic() < deadline, "a silent server was never detected"
            time.sleep(0.01)
        history.fault_detected()
    finally:
        server.resume()
    wait_state([sub, pub], "connected")
    history.fault_ended()
    history.invoke(1)
    pub.send(Message("stall.topic", 1))
    history.published(1)
    wait_for_seqs(history, [1])
    line = report("N-C paused server", history, last_error=sub.stats()["last_error"])
    assert history.check().detect_s is not None, line
    sub.close()
    pub.close()


def test_close_flushes_what_was_sent(nats_server_factory: Any) -> None:
    """N-C row 21: messages sent right before ``close`` still reach the server."""
    server: NatsServer = nats_server_factory(jetstream=False)
    sub = NatsTransport(server.url)
    history = History()
    sub.subscribe("closing.topic", lambda m: history.delivered(m.payload))
    sub.flush()
    pub = NatsTransport(server.url)
    for seq in range(2000):
        history.invoke(seq)
        pub.send(Message("closing.topic", seq))
        history.published(seq)
    pub.close()
    wait_for_seqs(history, range(2000))
    line = report("N-C close with messages queued", history)
    assert history.check().lost == 0, line
    sub.close()


def test_ten_thousand_subscriptions_come_back_after_restart(nats_server_factory: Any) -> None:
    """N-C row 10: one connection carries 10 000 subscriptions; all are replayed after a server
    restart, and unsubscribing leaves none behind."""
    server: NatsServer = nats_server_factory(jetstream=False)
    transport = NatsTransport(server.url, **FAST)
    pub = NatsTransport(server.url, **FAST)
    history = History()
    count = 10_000
    started = time.monotonic()
    ids = [
        transport.subscribe(f"many.t{n}", lambda m: history.delivered(m.payload))
        for n in range(count)
    ]
    subscribe_s = time.monotonic() - started
    assert transport.stats()["subscriptions"] == count
    server.restart()
    wait_state([transport, pub], "connected")
    transport.flush()
    probes = list(range(0, count, 97))
    for n in probes:
        history.invoke(n)
        pub.send(Message(f"many.t{n}", n))
        history.published(n)
    wait_for_seqs(history, probes)
    for sub_id in ids:
        assert transport.unsubscribe(sub_id)
    line = report("N-C 10k subscriptions", history, subscribe_total_s=round(subscribe_s, 2))
    assert transport.stats()["subscriptions"] == 0, line
    assert history.check().lost == 0, line
    transport.close()
    pub.close()
