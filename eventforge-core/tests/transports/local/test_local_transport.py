"""local:// behaviour beyond the conformance suites: URLs and options, named subscriptions,
binary payloads, counted sends and doorbell wake-ups (bounded backlogs: test_local_backlog)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import eventforge
import pytest
from eventforge import MessageQueue
from eventforge.errors import ConfigurationError, UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.queue._routing import REROUTED_FROM_HEADER, UnroutableError
from eventforge.testing import wait_until
from eventforge.transport import nonblocking
from eventforge.transports.local import LocalTransport, default_directory
from eventforge.transports.memory import MemoryTransport


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[LocalTransport]]:
    made: list[LocalTransport] = []
    yield made
    for transport in made:
        transport.close()


def open_local(made: list[LocalTransport], path: Path, **options: object) -> LocalTransport:
    transport = LocalTransport(path, **options)
    made.append(transport)
    return transport


# -- URLs and options ------------------------------------------------------------------------


def test_connect_reads_directory_and_options_from_the_url(tmp_path: Path) -> None:
    with eventforge.connect(f"local://{tmp_path}?max_messages=7&overflow=refuse") as transport:
        assert isinstance(transport, LocalTransport)
        assert transport.directory == tmp_path
        assert transport.settings["max_messages"] == 7
        assert transport.settings["overflow"] == "refuse"
    assert (tmp_path / "eventforge.db").exists()


def test_keywords_and_url_share_one_option_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown local option 'bogus'.*accepted"):
        eventforge.connect(f"local://{tmp_path}?bogus=1")
    with pytest.raises(ConfigurationError, match="unknown local option 'bogus'"):
        LocalTransport(tmp_path, bogus=1)
    with pytest.raises(ConfigurationError, match=r"synchronous=.*invalid"):
        LocalTransport(tmp_path, synchronous="sometimes")
    with pytest.raises(ConfigurationError, match="names no host"):
        eventforge.connect("local://somehost/tmp")


def test_default_directory_is_eventforge_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTFORGE_HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home"
    with eventforge.connect("local://") as transport:
        assert transport.directory == tmp_path / "home"  # type: ignore[attr-defined]
    monkeypatch.delenv("EVENTFORGE_HOME")
    assert "eventforge" in str(default_directory())


# -- named subscriptions -----------------------------------------------------------------------


def test_named_subscription_keeps_its_backlog_in_order_while_nobody_listens(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    consumer = open_local(opened, tmp_path)
    sub = consumer.subscribe("billing.*", lambda m: None, durable="billing")
    consumer.unsubscribe(sub)
    consumer.close()
    publisher = open_local(opened, tmp_path)
    for n in range(50):
        publisher.send(Message("billing.invoice", n))
    later = open_local(opened, tmp_path)
    got: list[Message] = []
    later.subscribe("billing.*", got.append, durable="billing")
    assert wait_until(lambda: len(got) == 50, timeout=10)
    assert [m.payload for m in got] == list(range(50))
    assert wait_until(lambda: later.subscriptions()[0]["backlog"] == 0, timeout=10)


def test_durable_flows_through_message_queue_subscribe(tmp_path: Path) -> None:
    with MessageQueue(LocalTransport(tmp_path)) as queue:
        handler_id = queue.subscribe("audit.**", lambda m: None, durable="audit")
        queue.unsubscribe(handler_id)
        queue.publish("audit.login", {"user": "ada"})
    got: list[object] = []
    with MessageQueue(LocalTransport(tmp_path)) as queue:
        queue.subscribe("audit.**", lambda m: got.append(m.payload), durable="audit")
        assert wait_until(lambda: got == [{"user": "ada"}], timeout=10)


def test_durable_needs_a_transport_that_keeps_named_subscriptions() -> None:
    with MessageQueue(MemoryTransport()) as queue, pytest.raises(UnsupportedCapabilityError):
        queue.subscribe("a.b", lambda m: None, durable="x")


def test_a_name_is_one_pattern(tmp_path: Path, opened: list[LocalTransport]) -> None:
    transport = open_local(opened, tmp_path)
    transport.subscribe("a.*", lambda m: None, durable="n")
    with pytest.raises(ConfigurationError, match=r"already exists on 'a\.\*'"):
        transport.subscribe("b.*", lambda m: None, durable="n")


def test_group_members_in_two_transports_share_one_named_backlog(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    first, second = open_local(opened, tmp_path), open_local(opened, tmp_path)
    got: dict[str, list[int]] = {"first": [], "second": []}
    lock = threading.Lock()

    def member(name: str) -> object:
        def take(message: Message) -> None:
            with lock:
                got[name].append(message.payload)

        return take

    first.subscribe("jobs.run", member("first"), group="w", durable="jobs")  # type: ignore[arg-type]
    second.subscribe("jobs.run", member("second"), group="w", durable="jobs")  # type: ignore[arg-type]
    for n in range(200):
        first.send(Message("jobs.run", n))
    assert wait_until(lambda: len(got["first"]) + len(got["second"]) >= 200, timeout=10)
    assert sorted(got["first"] + got["second"]) == list(range(200))


# -- payloads and counting -------------------------------------------------------------------


def test_bytes_payload_arrives_unchanged_with_a_serializer_that_carries_bytes(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    # The stored envelope is the wire codec's: a serializer that carries bytes carries them here.
    blob = bytes(range(256)) * 4
    a = open_local(opened, tmp_path, serializer="pickle", trusted=True)
    b = open_local(opened, tmp_path, serializer="pickle", trusted=True)
    got: list[Message] = []
    b.subscribe("blob", got.append)
    a.send(Message("blob", blob, {"k": "v"}))
    assert wait_until(lambda: bool(got), timeout=10)
    assert got[0].payload == blob
    assert isinstance(got[0].payload, bytes)
    assert got[0].headers["k"] == "v"


def test_send_counted_counts_subscriptions_and_stores_nothing_unrouted(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    t = open_local(opened, tmp_path)
    assert t.send_counted(Message("nobody.home", 1)) == 0
    t.subscribe("x.*", lambda m: None)
    t.subscribe("x.y", lambda m: None, group="g")
    t.subscribe("x.y", lambda m: None, group="g")  # same group: one subscription
    assert t.send_counted(Message("x.y", 1)) == 2
    t.send(Message("nobody.home", 2))
    assert t.stats()["unroutable"] == 2
    # nothing of the unrouted messages was stored
    rows = t._store.read("SELECT COUNT(*) FROM messages WHERE topic = 'nobody.home'")
    assert rows[0][0] == 0


# -- no polling ------------------------------------------------------------------------------


def test_blocked_receiver_is_woken_by_the_doorbell_not_by_the_periodic_check(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    # The safety-net check runs once an hour here: only a doorbell can wake the receiver.
    receiver = open_local(opened, tmp_path, check_interval=3600)
    sender = open_local(opened, tmp_path, check_interval=3600)
    got: list[Message | None] = []
    thread = threading.Thread(target=lambda: got.append(receiver.receive("ping", timeout=30)))
    thread.start()
    assert wait_until(lambda: sender.send_counted(Message("ping", 1)) > 0, timeout=10)
    thread.join(30)
    assert got
    assert got[0] is not None
    assert got[0].payload == 1


def test_subscriber_is_woken_by_the_doorbell(tmp_path: Path, opened: list[LocalTransport]) -> None:
    receiver = open_local(opened, tmp_path, check_interval=3600)
    sender = open_local(opened, tmp_path, check_interval=3600)
    got: list[Message] = []
    receiver.subscribe("ping", got.append)
    for n in range(5):
        sender.send(Message("ping", n))
        assert wait_until(lambda n=n: len(got) == n + 1, timeout=10)


def test_a_blocking_handler_leaves_a_worker_for_nonblocking_callbacks(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    # The handler waits for a message that a nonblocking callback of the same transport
    # receives: one worker runs the handler, the other delivers the message it waits for.
    receiver = open_local(opened, tmp_path)
    sender = open_local(opened, tmp_path)
    entered, released, done = threading.Event(), threading.Event(), threading.Event()

    def slow(message: Message) -> None:
        entered.set()
        if released.wait(10):
            done.set()

    receiver.subscribe("slow", slow)
    receiver.subscribe("release", nonblocking(lambda m: released.set()))
    sender.send(Message("slow", 1))
    assert entered.wait(10)
    sender.send(Message("release", 1))
    assert done.wait(10)


def test_a_directory_too_deep_for_a_socket_address_still_wakes_subscribers(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "bells")) > 108  # longer than any Unix socket address
    receiver = open_local(opened, deep, check_interval=3600)
    sender = open_local(opened, deep, check_interval=3600)
    got: list[Message] = []
    receiver.subscribe("ping", got.append)
    sender.send(Message("ping", 1))
    assert wait_until(lambda: len(got) == 1, timeout=10)
    assert receiver._hub.bell.path.exists()
    receiver.close()
    assert not receiver._hub.bell.path.exists()


def test_peers_find_each_others_bells_through_a_different_path_to_the_directory(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    # Another mount point of the same directory (here a symlink): the store records bells by
    # name, so each side resolves them against its own path.
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    receiver = open_local(opened, real, check_interval=3600)
    sender = open_local(opened, tmp_path / "alias", check_interval=3600)
    got: list[Message] = []
    receiver.subscribe("ping", got.append)
    sender.send(Message("ping", 1))
    assert wait_until(lambda: len(got) == 1, timeout=10)


def test_a_message_is_stored_once_whatever_its_fan_out(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    publisher = open_local(opened, tmp_path)
    readers = [open_local(opened, tmp_path) for _ in range(3)]
    got: list[list[Message]] = [[] for _ in readers]
    for reader, bucket in zip(readers, got, strict=True):
        reader.subscribe("fan.*", bucket.append)
        reader.subscribe("fan.**", bucket.append)
    assert publisher.send_counted(Message("fan.out", "x")) == 6
    assert wait_until(lambda: all(len(b) == 2 for b in got), timeout=10)
    assert publisher._store.read("SELECT COUNT(*) FROM inbox")[0][0] == 0


def test_unroutable_policies_of_the_queue_work_across_transports(tmp_path: Path) -> None:
    other = LocalTransport(tmp_path)
    with (
        MessageQueue(LocalTransport(tmp_path), unroutable="return") as strict,
        MessageQueue(LocalTransport(tmp_path), unroutable="reroute:parking") as rerouting,
    ):
        with pytest.raises(UnroutableError):
            strict.publish("nobody.listens", 1)
        parked: list[Message] = []
        other.subscribe("parking", parked.append, durable="parking")
        rerouting.publish("nobody.listens", 2)
        assert wait_until(lambda: len(parked) == 1, timeout=10)
        assert parked[0].headers[REROUTED_FROM_HEADER] == "nobody.listens"
        got: list[Message] = []
        other.subscribe("somebody.*", got.append)
        strict.publish("somebody.listens", 3)  # taken by a subscriber in another transport
        assert wait_until(lambda: len(got) == 1, timeout=10)
        assert strict.stats["unroutable"] == 1
    other.close()


def test_receive_async_misses_nothing_between_its_slices(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    receiver = open_local(opened, tmp_path)
    sender = open_local(opened, tmp_path)
    result: list[Message | None] = []
    thread = threading.Thread(
        target=lambda: result.append(asyncio.run(receiver.receive_async("once", timeout=20)))
    )
    thread.start()
    # Sent exactly once, after the receiver's subscription exists (the count says so).
    assert wait_until(lambda: sender.send_counted(Message("once", "only")) == 1, timeout=10)
    thread.join(20)
    assert result
    assert result[0] is not None
    assert result[0].payload == "only"


def test_a_quiet_subscription_does_not_keep_other_topics_messages_stored(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    # An exact-topic reader moves past messages of other topics, so they are deleted once
    # the readers that want them have read them.
    subscriber = open_local(opened, tmp_path)
    publisher = open_local(opened, tmp_path)
    got: list[Message] = []
    subscriber.subscribe("quiet", lambda m: None)
    subscriber.subscribe("busy", got.append)
    for n in range(50):
        publisher.send(Message("busy", n))
    assert wait_until(lambda: len(got) == 50, timeout=10)
    stored = "SELECT COUNT(*) FROM messages"
    assert wait_until(lambda: publisher._store.read(stored)[0][0] == 0, timeout=10)
