"""Redis Streams (work queues and groups) under faults.

Killed and restarted server with and without persistence, a paused server under blocked reads,
a consumer process SIGKILLed mid-handler (with and without dedupe), malformed entries written
with redis-cli. Figures are printed in the RELIABILITY.md style; only stall watchdogs fail on
time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.testing.history import History, StallWatchdog
from eventforge.workqueue import RetryPolicy, WorkQueue

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHILD = str(Path(__file__).with_name("_child.py"))
POLICY = RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.2)


def _wait_until(predicate: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """A watchdog, not a timing assertion: fail only when the system is stuck."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"stalled waiting for: {what}")
        time.sleep(0.01)


class _Producer(threading.Thread):
    """Puts sequence numbers; a put that returned is ``ok``, one that raised is ambiguous."""

    def __init__(self, queue: WorkQueue, history: History) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.history = history
        self.stop = threading.Event()
        self.seq = 0

    def run(self) -> None:
        while not self.stop.is_set():
            seq = self.seq
            self.seq += 1
            self.history.invoke(seq)
            try:
                self.queue.put(seq)
            except TransportError:
                # The XADD may or may not have been applied before the link broke.
                self.history.publish_failed(seq, ambiguous=True)
                self.stop.wait(0.05)
                continue
            self.history.published(seq)
            self.stop.wait(0.002)


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no_persistence"])
def test_server_killed_mid_stream(
    appendonly: bool, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """R-ST row 1: with AOF, lost == 0 for every acknowledged XADD; without persistence the
    lost stream is reported (``stream_lost``), never silently "working"."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory(appendonly=appendonly)
    transport = RedisTransport.from_url(
        server.url, socket_timeout=1.0, socket_connect_timeout=1.0, block=0.2, claim_idle=1.0
    )
    queue = WorkQueue("fault-kill", transport=transport, retry=POLICY)
    history = History()
    consumer = queue.consume(lambda m: history.delivered(m.payload), concurrency=2)
    producer = _Producer(queue, history)
    producer.start()
    watchdog = StallWatchdog(history, stall_s=30.0)
    try:
        watchdog.wait_for(50)
        history.fault_started()
        server.kill()
        server.restart()
        history.fault_ended()
        before = history.unique_delivered()
        watchdog.wait_for(before + 50, what="deliveries after the restart")
    finally:
        producer.stop.set()
        producer.join(10)
    if appendonly:
        acked = set(history.ok)
        _wait_until(lambda: acked <= set(history.deliveries), "the backlog to drain")
    else:
        time.sleep(1.0)  # drain what survived; the rest is gone with the server's memory
    consumer.stop()
    report = history.check()
    stats = queue.stats
    report.extra.update(
        appendonly=appendonly, stream_lost=stats["stream_lost"], redelivered=stats["redelivered"]
    )
    print(report.summary())
    queue.close()
    transport.close()
    assert report.unexpected == 0
    if appendonly:
        assert report.lost == 0, report.summary()
        assert stats["stream_lost"] == 0
    else:
        assert stats["stream_lost"] >= 1, "losing the stream must be reported"


def test_blocked_reads_never_hang_on_a_paused_server(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """R-ST rows 2 and 7: XREADGROUP blocked while the server is paused returns or raises
    (socket timeout > BLOCK); after SIGCONT the next item is delivered, to the group too."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    transport = RedisTransport.from_url(
        server.url, socket_timeout=1.0, socket_connect_timeout=1.0, block=0.5
    )
    queue = WorkQueue("fault-pause", transport=transport, retry=POLICY)
    group_got: list[int] = []
    transport.subscribe("pause.jobs", lambda m: group_got.append(m.payload), group="pausers")
    outcomes: list[str] = []

    def blocked_get() -> None:
        try:
            outcomes.append("none" if queue.get(timeout=3.0) is None else "item")
        except TransportError as exc:
            outcomes.append(f"raised {type(exc).__name__}")

    reader = threading.Thread(target=blocked_get, daemon=True)
    reader.start()
    time.sleep(0.1)
    server.pause()
    try:
        reader.join(30)  # stall watchdog: a hung read fails the test here
        assert not reader.is_alive(), "a blocked stream read hung on a paused server"
    finally:
        server.resume()
    print(f"blocked read outcome while paused: {outcomes}")
    _wait_until(lambda: _put_ok(queue), "put to work again after SIGCONT")
    delivery = None
    deadline = time.monotonic() + 30
    while delivery is None and time.monotonic() < deadline:
        try:
            delivery = queue.get(timeout=1.0)
        except TransportError:
            continue
    assert delivery is not None
    delivery.ack()
    transport.send(Message("pause.jobs", 7))
    _wait_until(lambda: 7 in group_got, "the group consumer to read again after SIGCONT")
    group_errors = transport.stats()["group_read_errors"]
    print(f"group_read_errors={group_errors}")
    queue.close()
    transport.close()


def _put_ok(queue: WorkQueue) -> bool:
    try:
        queue.put("after")
        return True
    except TransportError:
        time.sleep(0.05)
        return False


@pytest.fixture
def worker_process(redis_server: RedisServer) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []

    def start(queue: str, sleep: float, dedupe: bool) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [
                sys.executable,
                CHILD,
                "worker",
                redis_server.url,
                queue,
                str(sleep),
                "1" if dedupe else "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(10)


@pytest.mark.parametrize("dedupe", [False, True], ids=["plain", "dedupe"])
def test_consumer_killed_mid_handler_is_reclaimed(
    dedupe: bool,
    redis_server: RedisServer,
    worker_process: Callable[..., subprocess.Popen[str]],
) -> None:
    """R-ST row 3: the entry of a SIGKILLed consumer is taken over after ``claim_idle``.
    Without dedupe it is processed again (attempt 2; a duplicate effect, counted); with
    dedupe the side effect happens once and the redelivery is counted as skipped."""
    from eventforge_redis import RedisTransport

    name = f"killed-{os.urandom(4).hex()}"
    transport = RedisTransport.from_url(redis_server.url, claim_idle=1.0, block=0.2)
    backend = transport.work_queue_backend(name, POLICY, dedupe_ttl=60.0 if dedupe else None)
    queue = WorkQueue(name, backend=backend)
    client = transport.client
    child = worker_process(name, 60.0, dedupe)
    queue.put("job-1")
    _wait_until(lambda: client.llen(f"effects:{name}") >= 1, "the child to start the handler")
    child.kill()
    child.wait(10)
    killed_at = time.monotonic()
    attempts: list[int] = []

    def handle(message: Message) -> None:
        client.rpush(f"effects:{name}", str(message.payload))

    # Take over like another worker process would: fetch until the entry comes back or is skipped.
    def reclaimed() -> bool:
        delivery = queue.get(timeout=0.2)
        if delivery is not None:
            attempts.append(delivery.attempt)
            handle(delivery.message)
            delivery.ack()
        return bool(attempts) or queue.stats["duplicates_skipped"] > 0

    _wait_until(reclaimed, "the dead consumer's entry to be taken over")
    redelivery_s = time.monotonic() - killed_at
    _wait_until(lambda: queue.join(0.1), "the queue to be empty")
    effects = client.llen(f"effects:{name}")
    stats = queue.stats
    print(
        f"dedupe={dedupe} redelivery_s={redelivery_s:.2f} attempts={attempts} lost=0 "
        f"effects={effects} duplicate_effects={effects - 1} "
        f"duplicates_skipped={stats['duplicates_skipped']} redelivered={stats['redelivered']}"
    )
    queue.close()
    transport.close()
    assert stats["pending"] == 0
    assert stats["in_flight"] == 0
    if dedupe:
        assert effects == 1
        assert stats["duplicates_skipped"] == 1
    else:
        assert attempts == [2]
        assert effects == 2


def test_malformed_entries_are_counted_and_dead_lettered(redis_server: RedisServer) -> None:
    """R-ST / R-PS row 11: entries written with redis-cli that are not JSON or not an envelope
    go to the dead-letter stream (work queue, group) or are dropped and counted (pub/sub); the
    consumers keep running."""
    from eventforge_redis import RedisTransport

    transport = RedisTransport.from_url(redis_server.url, block=0.2)
    name = f"malformed-{os.urandom(4).hex()}"
    queue = WorkQueue(name, transport=transport, retry=POLICY)
    stream = f"eventforge:wq:{name}"
    cli = ["redis-cli", "-p", str(redis_server.port)]
    bad = ["not json at all", '{"version": 1, "id": 5, "topic": "x"}', '{"version": 99}']
    for data in bad:
        subprocess.run([*cli, "XADD", stream, "*", "data", data], check=True, capture_output=True)
    subprocess.run([*cli, "XADD", stream, "*", "other", "field"], check=True, capture_output=True)
    queue.put("good")
    delivery = queue.get(timeout=10)
    assert delivery is not None
    assert delivery.message.payload == "good"
    delivery.ack()
    stats = queue.stats
    letters = queue.dead_letters()
    assert stats["malformed"] == 4
    assert len(letters) == 4
    assert all(letter.reason.startswith("malformed") for letter in letters)

    # Groups: the same, and the group keeps delivering.
    group_got: list[object] = []
    topic = f"malformed.g{os.urandom(3).hex()}"
    transport.subscribe(topic, lambda m: group_got.append(m.payload), group="g")
    group_stream = f"eventforge:group:g:{topic}"
    subprocess.run(
        [*cli, "XADD", group_stream, "*", "data", "garbage"], check=True, capture_output=True
    )
    transport.send(Message(topic, "fine"))
    _wait_until(lambda: "fine" in group_got, "the group to deliver after a malformed entry")
    _wait_until(lambda: transport.stats()["group_malformed"] == 1, "the group to count it")
    assert transport.client.xlen(f"{group_stream}:dead") == 1

    # Pub/sub: dropped and counted, the subscription lives on.
    plain: list[object] = []
    transport.subscribe(topic, lambda m: plain.append(m.payload))
    subprocess.run([*cli, "PUBLISH", topic, "{broken"], check=True, capture_output=True)
    transport.send(Message(topic, "still here"))
    _wait_until(lambda: "still here" in plain, "the subscriber to keep delivering")
    assert transport.stats()["malformed"] == 1
    print(
        f"wq_malformed={stats['malformed']} dead_letters={len(letters)} "
        f"group_malformed={transport.stats()['group_malformed']} pubsub_malformed=1 "
        "other_clients_ok=True"
    )
    queue.close()
    transport.close()


def test_pending_entry_deleted_behind_our_back_is_counted(redis_server: RedisServer) -> None:
    """R-ST row 20: when someone trims or deletes an unacknowledged entry, the takeover
    reports it (``trimmed_unacked``) instead of losing it silently."""
    from eventforge_redis import RedisTransport

    name = f"trimmed-{os.urandom(4).hex()}"
    transport = RedisTransport.from_url(redis_server.url, claim_idle=0.2, block=0.1)
    first = WorkQueue(name, transport=transport, retry=POLICY)
    first.put("will vanish")
    delivery = first.get(timeout=10)
    assert delivery is not None  # taken, never settled: its consumer "died"
    stream = f"eventforge:wq:{name}"
    entry_id = delivery.token[0]
    subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "XDEL", stream, entry_id],
        check=True,
        capture_output=True,
    )
    second = WorkQueue(name, transport=transport, retry=POLICY)
    _wait_until(
        lambda: second.get(timeout=0.2) is None and second.stats["trimmed_unacked"] == 1,
        "the takeover to report the deleted entry",
    )
    stats = second.stats
    print(f"lost=1 trimmed_unacked={stats['trimmed_unacked']} in_flight={stats['in_flight']}")
    assert stats["in_flight"] == 0
    first.close()
    second.close()
    transport.close()


def test_group_lost_with_the_server_is_recreated_and_reported(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """R-ST row 1 (no persistence) for groups: after a restart the group stream, the group and
    its registration are gone; the member recreates them, counts it, and delivery resumes."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "block": 0.2}
    member = RedisTransport.from_url(server.url, **options)
    publisher = RedisTransport.from_url(server.url, **options)
    got: list[object] = []
    member.subscribe("lost.jobs", lambda m: got.append(m.payload), group="workers")
    publisher.send(Message("lost.jobs", "before"))
    _wait_until(lambda: got == ["before"], "the first delivery")
    server.kill()
    server.restart()
    _wait_until(lambda: member.stats()["groups_recreated"] >= 1, "the loss to be reported")

    def delivered_after_restart() -> bool:
        try:
            publisher.send(Message("lost.jobs", "after"))
            publisher.flush(2)
        except TransportError:
            pass
        return "after" in got

    _wait_until(delivered_after_restart, "delivery to the recreated group")
    stats = member.stats()
    print(
        f"groups_recreated={stats['groups_recreated']} group_read_errors={stats['group_read_errors']}"
    )
    member.close()
    publisher.close()
