"""The supervisor's promises, against a RabbitMQ node of the module's own that tests disturb:
a cancelled consumer is consumed again, a dropped connection is restored (topology, consumers,
confirms, fanout and headers bindings), a resource alarm makes publishes fail clearly, a
channel closed by a protocol error is reopened without touching the other subscriptions, and a
SIGKILLed broker loses no confirmed work item and no delayed one. Figures are printed (run with
-s to see them)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.brokers import BrokerUnavailable
from eventforge.testing.conformance import Collector
from eventforge.testing.pytest_plugin import require_brokers
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_amqp.transport import AmqpTransport

from .helpers import raw_channel

pytestmark = [pytest.mark.broker, pytest.mark.slow]

Make = Callable[..., AmqpTransport]
POLICY = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)


@pytest.fixture(scope="module")
def fault_node() -> Iterator[RabbitServer]:
    """A node only this module uses: it is restarted, closes connections, raises alarms."""
    try:
        node = RabbitServer()
        node.start()
    except BrokerUnavailable as exc:
        if require_brokers():
            pytest.fail(f"broker required (EVENTFORGE_REQUIRE_BROKERS=1) but unavailable: {exc}")
        pytest.skip(f"broker unavailable: {exc}")
    yield node
    node.cleanup()


@pytest.fixture
def on_fault_node(fault_node: RabbitServer) -> Iterator[Make]:
    made: list[AmqpTransport] = []

    def make(**options: object) -> AmqpTransport:
        options.setdefault("reconnect_initial", 0.05)
        options.setdefault("reconnect_max", 0.5)
        transport = AmqpTransport(fault_node.url, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def topic(name: str) -> str:
    return f"f{os.urandom(4).hex()}.{name}"


def test_group_consumer_whose_queue_is_deleted_is_consumed_again(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    t = make_amqp()
    name, group = topic("jobs"), f"g{os.urandom(3).hex()}"
    got = Collector()
    t.subscribe(name, got, group=group)
    with raw_channel(rabbit_server.port) as channel:
        channel.queue_delete(f"eventforge.group.{group}.{name}")
    assert wait_until(lambda: t.stats()["resubscribes"] == 1, 10)
    assert t.stats()["consumer_cancels"] == 1
    t.send(Message(name, "after"))
    assert got.wait_for_count(1, 5)


def test_work_queue_consumer_whose_queue_is_deleted_is_consumed_again(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    name = f"wq{os.urandom(4).hex()}"
    backend = make_amqp().work_queue_backend(name, POLICY)
    assert backend.fetch(1, timeout=0.2) == []  # consuming now
    with raw_channel(rabbit_server.port) as channel:
        channel.queue_delete(f"eventforge.wq.{name}")
    backend.put(Message("job", "after"))  # declares the queue again if needed
    (delivery,) = backend.fetch(1, timeout=10)
    assert delivery.message.payload == "after"
    delivery.ack()


def test_dropped_connection_is_restored_with_topology_consumers_and_confirms(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    t = on_fault_node()
    plain, grouped = Collector(), Collector()
    name = topic("events")
    t.subscribe(name, plain)
    t.subscribe(name, grouped, group="workers")
    fault_node.ctl("close_all_connections", "fault test")
    assert wait_until(lambda: t.stats()["reconnects"] == 1, 20)
    stats = t.stats()
    print(f"\nconnection drop: recovered in {stats['last_recovery']:.3f} s")
    assert t.send_counted(Message(name, "confirmed")) == 1
    t.send(Message(name, "plain"))
    assert plain.wait_for_count(2, 10)
    assert grouped.wait_for_count(2, 10)
    assert sorted(plain.payloads()) == ["confirmed", "plain"]


def test_dropped_connection_restores_fanout_and_headers_bindings(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    names = {
        "fanout_exchange": f"fx{os.urandom(4).hex()}",
        "headers_exchange": f"hx{os.urandom(4).hex()}",
    }
    publisher = on_fault_node(routes="alerts.**=fanout,reports.**=headers", **names)
    subscriber = on_fault_node(**names)
    fanned, matched, grouped = Collector(), Collector(), Collector()
    subscriber.subscribe("alerts.disk", fanned, exchange_type="fanout")
    subscriber.subscribe("reports.**", matched, match={"format": "pdf"})
    subscriber.subscribe("alerts.**", grouped, group="ops", exchange_type="fanout")
    fault_node.ctl("close_all_connections", "fault test")
    assert wait_until(lambda: subscriber.stats()["reconnects"] == 1, 20)
    assert wait_until(lambda: publisher.stats()["reconnects"] == 1, 20)
    # The exclusive queues went with the connection: these arrive only if they were bound again.
    assert publisher.send_counted(Message("alerts.cpu", "fanned")) == 1
    publisher.send(Message("reports.daily", "skipped", {"format": "doc"}))
    publisher.send(Message("reports.daily", "matched", {"format": "pdf"}))
    assert fanned.wait_for_count(1, 10)
    assert grouped.wait_for_count(1, 10)
    assert matched.wait_for_count(1, 10)
    assert matched.payloads() == ["matched"]  # the x-match binding came back, not a catch-all
    assert fanned.payloads() == grouped.payloads() == ["fanned"]
    assert subscriber.stats()["delivered"] == 3
    print(f"\nfanout/headers restore: recovered in {subscriber.stats()['last_recovery']:.3f} s")


def publish_until_refused(t: AmqpTransport, message: Message) -> None:
    """Confirmed publishes until one fails (the broker blocks a connection when it publishes)."""
    for _ in range(20):
        t.send_counted(message)


def test_resource_alarm_fails_publishes_clearly_and_shows_in_stats(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    t = on_fault_node(publish_timeout=1.0)
    name = topic("alarm")
    got = Collector()
    t.subscribe(name, got)
    fault_node.ctl("set_vm_memory_high_watermark", "0")
    try:
        with pytest.raises(TransportError, match="blocked") as info:
            publish_until_refused(t, Message(name, "held"))
        assert "resource alarm" in str(info.value)
        assert t.stats()["blocked"] is True
        # Blocked longer than publish_timeout: even a fire-and-forget send is refused now.
        assert wait_until(lambda: t.stats()["blocked_time"] > 1.0, 10)
        with pytest.raises(TransportError, match="blocked"):
            t.send(Message(name, "refused"))
    finally:
        fault_node.ctl("set_vm_memory_high_watermark", "0.9")
    assert wait_until(lambda: t.stats()["blocked"] is False, 20)
    stats = t.stats()
    print(
        f"\nresource alarm: blocked {stats['blocked_time']:.2f} s, count {stats['blocked_count']}"
    )
    assert stats["blocked_time"] > 0
    assert stats["publish_errors"] >= 2
    assert t.send_counted(Message(name, "after")) == 1


def test_channel_closed_by_a_bad_ack_is_reopened_without_touching_other_subscriptions(
    make_amqp: Make,
) -> None:
    t = make_amqp()
    name = topic("steady")
    got = Collector()
    t.subscribe(name, got)
    backend = t.work_queue_backend(f"wq{os.urandom(4).hex()}", POLICY)
    backend.put(Message("job", "held"))
    (delivery,) = backend.fetch(1, timeout=5)
    channel = delivery.token.channel
    t._link.run(channel.basic_ack(999_999))  # unknown delivery tag: PRECONDITION_FAILED
    assert wait_until(lambda: t.stats()["channels_closed_by_broker"] == 1, 10)
    delivery.ack()  # its channel is gone: a stale settle, not sent
    assert backend.stats()["stale_settles"] == 1
    (again,) = backend.fetch(1, timeout=10)  # the broker gave it back; consuming resumed
    assert again.message.payload == "held"
    assert again.attempt == 2
    again.ack()
    t.send(Message(name, "still here"))
    assert got.wait_for_count(1, 5)
    assert t.stats()["reconnects"] == 0


def test_wrong_credentials_fail_after_one_attempt(rabbit_server: RabbitServer) -> None:
    from eventforge_amqp.transport import AmqpAuthError

    log_path = os.path.join(rabbit_server.data_dir, "log", f"{rabbit_server.node}.log")

    def failures() -> int:
        with open(log_path, errors="replace") as f:
            return f.read().count("invalid credentials")

    before = failures()
    with pytest.raises(AmqpAuthError) as info:
        AmqpTransport(rabbit_server.amqp_url("guest", "not-the-password"))
    assert "not-the-password" not in str(info.value)
    assert "Nothing was retried" in str(info.value)
    time.sleep(1.0)  # a retry storm would show up in the broker's log meanwhile
    assert failures() - before == 1


def test_broker_sigkill_during_a_work_queue_run_loses_no_confirmed_item(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    name = f"wq{os.urandom(4).hex()}"
    producer = on_fault_node(publish_timeout=30).work_queue_backend(name, POLICY)
    consumer = on_fault_node().work_queue_backend(name, POLICY)
    # RabbitMQ 3.10 records a new quorum queue in its Ra registry (DETS) within a few seconds;
    # a node killed before that cannot recover the queue (see docs/transports/amqp.md).
    time.sleep(5)
    total = 300
    confirmed: list[str] = []
    handled: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        for n in range(total):
            message = Message("job", n)
            while True:
                try:
                    producer.put(message)  # returns only once the broker confirmed it
                    break
                except TransportError:
                    time.sleep(0.1)  # retried with the same id: deduplicated if it landed
            confirmed.append(message.id)

    def consume() -> None:
        while not stop.is_set():
            try:
                deliveries = consumer.fetch(20, timeout=0.2)
            except TransportError:
                time.sleep(0.1)
                continue
            for delivery in deliveries:
                handled.append(delivery.message.id)
                delivery.ack()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: len(handled) >= 100, 30)
    fault_node.kill()
    killed_at = time.monotonic()
    fault_node.start()
    threads[0].join(90)
    assert wait_until(lambda: set(confirmed) <= set(handled), 60)
    recovered = time.monotonic() - killed_at
    stop.set()
    threads[1].join(10)
    lost = set(confirmed) - set(handled)
    duplicates = len(handled) - len(set(handled))
    print(
        f"\nbroker SIGKILL: sent={len(confirmed)} handled={len(set(handled))} lost={len(lost)} "
        f"duplicates={duplicates} time to recover (restart included)={recovered:.1f} s"
    )
    assert len(confirmed) == total
    assert not lost


def test_broker_sigkill_loses_no_delayed_item_and_delivers_none_early(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    """Delayed items wait in the delay levels (quorum queues) while the node is SIGKILLed and
    restarted: every one comes back, none before its time; those whose time passed while the
    node was down come as soon as it is back."""
    name = f"wqd{os.urandom(4).hex()}"
    producer = WorkQueue(name, on_fault_node(publish_timeout=30), retry=POLICY)
    producer.put("declares the levels", delay=0.01)
    # RabbitMQ 3.10 records a new quorum queue in its Ra registry within a few seconds;
    # a node killed before that cannot recover the queue (see docs/transports/amqp.md).
    time.sleep(5)
    total = 60
    due: dict[int, float] = {}
    for n in range(total):
        start = time.time()
        producer.put(n, delay=1.0 + n * 0.25)  # due over 1 .. 16 s: before and after the restart
        due[n] = start + 1.0 + n * 0.25
    producer.close()
    fault_node.kill()
    killed_at = time.monotonic()
    fault_node.start()
    restarted = time.monotonic() - killed_at
    consumer = WorkQueue(name, on_fault_node(), retry=POLICY)
    arrived: dict[int, float] = {}
    duplicates = 0
    deadline = time.monotonic() + 90
    while len(arrived) < total and time.monotonic() < deadline:
        delivery = consumer.get(timeout=0.5)
        if delivery is None:
            continue
        payload = delivery.message.payload
        delivery.ack()
        if not isinstance(payload, int):
            continue
        if payload in arrived:
            duplicates += 1
        arrived.setdefault(payload, time.time())
    consumer.close()
    lost = sorted(set(due) - set(arrived))
    early = [n for n, at in arrived.items() if at < due[n]]
    late_after_restart = [at - due[n] for n, at in arrived.items()]
    print(
        f"\nbroker SIGKILL with delayed items: put={total} delivered={len(arrived)} "
        f"lost={len(lost)} early={len(early)} duplicates={duplicates} "
        f"node back after {restarted:.1f} s, latest item {max(late_after_restart):.1f} s late"
    )
    assert not lost, f"lost: {lost}"
    assert not early, f"came before their time: {early}"


CONSUMER = """
import sys, time
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_amqp.transport import AmqpTransport
backend = AmqpTransport(sys.argv[1]).work_queue_backend(sys.argv[2], RetryPolicy())
held = []
while len(held) < 5:
    held += backend.fetch(5 - len(held), timeout=10)
print(len(held), flush=True)
time.sleep(60)  # killed mid-batch, holding every item unacknowledged
"""


def _consumer_process(script: str, url: str, name: str) -> subprocess.Popen[str]:
    """A consumer of work queue ``name`` in a process of its own; it prints what it fetched."""
    return subprocess.Popen(
        [sys.executable, "-c", script, url, name], stdout=subprocess.PIPE, text=True
    )


def test_consumer_process_sigkill_mid_batch_gets_its_items_redelivered(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    name = f"wq{os.urandom(4).hex()}"
    backend = make_amqp().work_queue_backend(name, POLICY)
    backend.put_many([Message("job", n) for n in range(5)])
    proc = _consumer_process(CONSUMER, rabbit_server.url, name)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "5"
    finally:
        proc.kill()
        proc.wait(10)
    again: list[int] = []
    while len(again) < 5:
        deliveries = backend.fetch(5, timeout=10)
        assert deliveries, f"only {again} came back"
        for delivery in deliveries:
            assert delivery.attempt == 2
            again.append(delivery.message.payload)
            delivery.ack()
    print(f"\nconsumer SIGKILL mid-batch: held=5 redelivered={len(again)} lost=0")
    assert sorted(again) == [0, 1, 2, 3, 4]


ACKER = """
import sys, time
from eventforge.workqueue import RetryPolicy
from eventforge_amqp.transport import AmqpTransport
backend = AmqpTransport(sys.argv[1]).work_queue_backend(sys.argv[2], RetryPolicy())
held = []
while len(held) < 10:
    held += backend.fetch(10 - len(held), timeout=10)
for delivery in held:
    if delivery.message.payload not in (3, 7, 8):
        delivery.ack()
backend.stats()  # returns once the acks recorded before it were written
print(len(held), flush=True)
time.sleep(60)  # killed holding 3, 7 and 8
"""


def unacked(node: RabbitServer, queue: str) -> int | None:
    """The deliveries of ``queue`` the broker holds unacknowledged (rabbitmqctl)."""
    for line in node.ctl("list_queues", "name", "messages_unacknowledged").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue and parts[1].isdigit():
            return int(parts[1])
    return None


def test_consumer_killed_after_acking_around_held_items_gets_only_the_held_ones_again(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    """Acks go out coalesced (one basic.ack(multiple) per run of settled deliveries): one
    must never cover an item still held. A consumer acks 7 of 10 items around 3 it holds
    (3 before acked ones, 7 and 8 between), is SIGKILLed, and exactly those 3 come back."""
    name = f"wq{os.urandom(4).hex()}"
    backend = make_amqp().work_queue_backend(name, POLICY)
    backend.put_many([Message("job", n) for n in range(10)])
    proc = _consumer_process(ACKER, rabbit_server.url, name)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "10"
        queue = f"eventforge.wq.{name}"
        assert wait_until(lambda: unacked(rabbit_server, queue) == 3, 20), unacked(
            rabbit_server, queue
        )
    finally:
        proc.kill()
        proc.wait(10)
    again: list[int] = []
    while len(again) < 3:
        deliveries = backend.fetch(10, timeout=10)
        assert deliveries, f"only {again} came back"
        for delivery in deliveries:
            assert delivery.attempt == 2
            again.append(delivery.message.payload)
            delivery.ack()
    assert backend.fetch(10, timeout=1) == []  # no acked item comes back
    print(f"\nconsumer SIGKILL after acking 7 of 10 around 3 held: redelivered={sorted(again)}")
    assert sorted(again) == [3, 7, 8]


def test_a_request_in_flight_when_the_connection_drops_ends_in_its_timeout_not_a_transport_error(
    on_fault_node: Make, fault_node: RabbitServer
) -> None:
    """It may have reached a server, so it is not failed as "never sent" (a TransportError,
    which with_retry would retry by default): its caller gets the timeout's None."""
    t = on_fault_node()
    name = topic("ask")
    heard = threading.Event()
    t.subscribe(name, lambda m: heard.set())  # takes the request, never answers
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(t.request(Message(name, "q"), timeout=3.0))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=ask)
    caller.start()
    assert heard.wait(10)
    fault_node.ctl("close_all_connections", "fault test")
    caller.join(30)
    assert outcome == [None], f"expected the timeout's None, got {outcome!r}"
    assert wait_until(lambda: t.stats()["reconnects"] >= 1, 20)
