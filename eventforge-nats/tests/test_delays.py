"""Delayed puts on JetStream: message schedules kept in the queue's stream by nats-server 2.12+.

Never early (the server delivers when its clock reaches the due time), late by the server's
schedule timer (it looks at most every 250 ms); kept in the stream, not in a client; a stream made
without schedules is updated on the first delayed put; an older server refuses a delayed put
before anything is stored. Lateness figures are printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from eventforge.errors import UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.testing.brokers import BrokerUnavailable, NatsServer
from eventforge.testing.pytest_plugin import require_brokers
from eventforge.transport import NOT_BEFORE_HEADER
from eventforge.workqueue import WorkQueue
from eventforge_nats._schedules import SCHEDULES_SINCE, schedule_headers, schedules_known_missing
from eventforge_nats.jetstream import queue_names
from eventforge_nats.transport import NatsTransport

pytestmark = pytest.mark.broker

Make = Callable[..., NatsTransport]


def _collect(queue: WorkQueue, n: int, timeout: float = 20.0) -> list[tuple[Any, float, float]]:
    """Take ``n`` items (acking each): payload, the time it arrived, its due time (or 0)."""
    out: list[tuple[Any, float, float]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        delivery = queue.get(timeout=0.5)
        if delivery is not None:
            due = float(delivery.message.headers.get(NOT_BEFORE_HEADER, 0.0))
            out.append((delivery.message.payload, time.time(), due))
            delivery.ack()
    return out


def _name(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def test_a_delayed_put_comes_no_earlier_than_its_delay_and_within_the_timer(make: Make) -> None:
    queue = WorkQueue(_name("delays"), make())
    put_at: dict[int, float] = {}
    for n in range(12):
        put_at[n] = time.time()
        queue.put(n, delay=0.3 + n * 0.1)
    queue.put("now")
    assert queue.stats["delayed"] == 12
    assert queue.stats["pending"] == 13  # delayed items are pending items
    got = _collect(queue, 13)
    assert got[0][0] == "now"
    assert [payload for payload, _, _ in got[1:]] == list(range(12))  # in due order
    lateness = []
    for payload, at, due in got[1:]:
        assert due >= put_at[payload] + 0.3 + payload * 0.1
        assert at >= due, f"item {payload} came {(due - at) * 1000:.1f} ms early"
        lateness.append(at - due)
    print(
        f"\njetstream delayed put: {len(lateness)} items, lateness p50 "
        f"{statistics.median(lateness) * 1000:.0f} ms, max {max(lateness) * 1000:.0f} ms"
    )
    # The stated precision is the server's 250 ms schedule timer; the bound leaves room for a
    # loaded machine, and fails an item that waited for something else (a poll, a restart).
    assert max(lateness) < 2.0
    assert queue.stats["delayed"] == 0


def test_a_delayed_item_waits_in_the_stream_and_a_retried_put_is_stored_once(
    make: Make,
) -> None:
    name = _name("delays-kept")
    producer = WorkQueue(name, make())
    message = Message(name, "later", {NOT_BEFORE_HEADER: time.time() + 0.6})
    producer.backend.put(message)
    producer.backend.put(message)  # a put retried after a lost acknowledgement: same msg id
    assert producer.stats["delayed"] == 1
    producer.close()
    consumer = WorkQueue(name, make())  # another connection: nothing held in the producer
    assert consumer.get(timeout=0.2) is None
    got = consumer.get(timeout=10)
    assert got is not None
    assert (got.message.payload, got.attempt, got.message.id) == ("later", 1, message.id)
    got.ack()
    assert consumer.get(timeout=1.0) is None  # stored once


def test_a_stream_made_without_schedules_takes_them_on_the_first_delayed_put(
    make: Make, nats_server: NatsServer, run_plain: Callable[..., Any]
) -> None:
    """A queue's stream created before delays existed (subject only, no schedules) is updated
    in place: its items stay, and the delayed item comes."""
    name = _name("delays-old-stream")
    names = queue_names(name)

    async def old_layout(nc: Any) -> None:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=names["stream"],
                subjects=[names["subject"]],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )

    run_plain(nats_server.url, old_layout)
    queue = WorkQueue(name, make())
    queue.put("stored before")
    queue.put("delayed", delay=0.3)
    assert [payload for payload, _, _ in _collect(queue, 2)] == ["stored before", "delayed"]

    async def config(nc: Any) -> Any:
        return (await nc.jetstream().stream_info(names["stream"])).config

    updated = run_plain(nats_server.url, config)
    assert updated.allow_msg_schedules is True
    assert f"{names['subject']}.due.*" in updated.subjects


def test_a_delay_of_three_days_is_the_schedules_time(
    make: Make, nats_server: NatsServer, run_plain: Callable[..., Any]
) -> None:
    queue = WorkQueue(_name("delays-days"), make())
    before = time.time()
    message_id = queue.put("in three days", delay=3 * 86_400)
    after = time.time()
    names = queue_names(queue.name)

    async def schedule(nc: Any) -> Any:
        subject = f"{names['subject']}.due.{message_id}"
        return await nc.jetstream().get_last_msg(names["stream"], subject)

    stored = run_plain(nats_server.url, schedule)
    header = stored.headers["Nats-Schedule"]
    assert header.startswith("@at ")
    due = datetime.fromisoformat(header[4:].replace("Z", "+00:00")).timestamp()
    assert before + 3 * 86_400 - 1e-6 <= due <= after + 3 * 86_400
    assert stored.headers["Nats-Schedule-Target"] == names["subject"]
    assert queue.get(timeout=0.3) is None


def _older_nats_server() -> NatsServer:
    """A nats-server older than message schedules: Debian's package (2.9 or 2.10)."""
    server = NatsServer()
    for candidate in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(candidate) and candidate != server.binary:
            server.binary = candidate
            break
    else:
        reason = "no system nats-server older than 2.12 (apt-get install nats-server)"
        if require_brokers():
            pytest.fail(f"broker required (EVENTFORGE_REQUIRE_BROKERS=1): {reason}")
        pytest.skip(reason)
    try:
        server.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"the system nats-server did not start: {exc}")
    return server


def test_an_older_server_refuses_a_delayed_put_before_storing_anything() -> None:
    server = _older_nats_server()
    transport = NatsTransport(server.url)
    try:
        version = transport._conn.client.connected_server_version
        assert (version.major, version.minor) < SCHEDULES_SINCE, (
            f"the system nats-server is {version}: this test needs one older than 2.12"
        )
        queue = WorkQueue(_name("delays-refused"), transport)
        assert queue.backend.delays is False
        with pytest.raises(UnsupportedCapabilityError, match=r"nats-server 2\.12 or later"):
            queue.put("later", delay=5)
        # The backend checks the stream too: the server drops a setting it does not know.
        due_later = Message(queue.name, "later", {NOT_BEFORE_HEADER: time.time() + 5})
        with pytest.raises(UnsupportedCapabilityError, match=r"does not know message schedules"):
            queue.backend.put(due_later)
        assert queue.stats["pending"] == 0
        queue.put("now")  # plain puts keep working
        got = queue.get(timeout=5)
        assert got is not None
        assert got.message.payload == "now"
        got.ack()
    finally:
        transport.close()
        server.cleanup()


def test_delay_support_is_read_from_the_server_version() -> None:
    class Version:
        def __init__(self, major: int, minor: int) -> None:
            self.major, self.minor = major, minor

    assert schedules_known_missing(Version(2, 11)) is True
    assert schedules_known_missing(Version(2, 12)) is False
    assert schedules_known_missing(Version(3, 0)) is False
    assert schedules_known_missing(Version(0, 0)) is False  # unknown: the stream tells


def test_schedule_subjects_are_one_token_per_item() -> None:
    subject, headers = schedule_headers("eventforge.wq.q", "2b15751b98917c451", 0.25)
    assert subject == "eventforge.wq.q.due.2b15751b98917c451"
    assert headers["Nats-Schedule"] == "@at 1970-01-01T00:00:00.250000Z"
    assert headers["Nats-Schedule-Target"] == "eventforge.wq.q"
    odd, _ = schedule_headers("eventforge.wq.q", "order.42 *", 1.0)
    assert odd.count(".") == 4
    assert "*" not in odd
    assert " " not in odd


def test_asyncio_put_async_with_a_delay(make: Make) -> None:
    queue = WorkQueue(_name("delays-async"), make())

    async def main() -> None:
        await queue.put_async("later", delay=0.3)

    start = time.time()
    asyncio.run(main())
    got = _collect(queue, 1)
    assert [payload for payload, _, _ in got] == ["later"]
    assert got[0][1] >= start + 0.3


@pytest.mark.slow
def test_server_sigkill_loses_no_delayed_item_and_delivers_none_early(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """Schedules are stream messages in the file store: every delayed item comes back after a
    SIGKILL and restart, none before its time; those due while the server was down come as
    soon as it is back."""
    server = nats_server_factory()
    fast = {"reconnect_time_wait": 0.1, "ping_interval": 1.0, "connect_timeout": 1.0}
    name = _name("delays-kill")
    producer_t = NatsTransport(server.url, **fast)
    producer = WorkQueue(name, producer_t)
    total = 40
    due: dict[int, float] = {}
    for n in range(total):
        start = time.time()
        producer.put(n, delay=0.5 + n * 0.1)  # due over 0.5 .. 4.4 s: before and after the kill
        due[n] = start + 0.5 + n * 0.1
    producer_t.close()
    server.kill()
    killed_at = time.monotonic()
    time.sleep(1.0)  # items come due while the server is down
    server.start()
    restarted = time.monotonic() - killed_at
    consumer_t = NatsTransport(server.url, **fast)
    consumer = WorkQueue(name, consumer_t)
    arrived: dict[int, float] = {}
    duplicates = 0
    deadline = time.monotonic() + 60
    while len(arrived) < total and time.monotonic() < deadline:
        delivery = consumer.get(timeout=0.5)
        if delivery is None:
            continue
        payload = delivery.message.payload
        delivery.ack()
        if payload in arrived:
            duplicates += 1
        arrived.setdefault(payload, time.time())
    consumer_t.close()
    lost = sorted(set(due) - set(arrived))
    early = [n for n, at in arrived.items() if at < due[n]]
    print(
        f"\nnats-server SIGKILL with delayed items: put={total} delivered={len(arrived)} "
        f"lost={len(lost)} early={len(early)} duplicates={duplicates} "
        f"server back after {restarted:.1f} s, latest item "
        f"{max(at - due[n] for n, at in arrived.items()):.2f} s late"
    )
    assert not lost, f"lost: {lost}"
    assert not early, f"came before their time: {early}"
