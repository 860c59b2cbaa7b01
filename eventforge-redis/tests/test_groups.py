"""Competing consumers and RPC over Redis Streams consumer groups, across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer

pytestmark = pytest.mark.broker

CHILD = str(Path(__file__).with_name("_child.py"))


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start child consumer processes (killed after the test)."""
    children: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, CHILD, *args],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "ready", f"child did not start: {line!r}"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(10)


def test_group_members_in_one_transport_and_a_plain_subscriber(
    make_redis: Callable[..., object],
) -> None:
    """One member of the group gets each message; a plain subscriber gets all of them."""
    publisher, consumer = make_redis(), make_redis()
    topic = f"jobs.g{os.urandom(4).hex()}"
    got: Counter[int] = Counter()
    everything: list[int] = []
    lock = threading.Lock()

    def member(message: Message) -> None:
        with lock:
            got[message.payload] += 1

    consumer.subscribe(topic, member, group="workers")  # type: ignore[attr-defined]
    consumer.subscribe(topic, member, group="workers")  # type: ignore[attr-defined]
    consumer.subscribe(topic, lambda m: everything.append(m.payload))  # type: ignore[attr-defined]
    for n in range(100):
        publisher.send(Message(topic, n))  # type: ignore[attr-defined]
    assert _wait(lambda: sum(got.values()) >= 100 and len(everything) >= 100)
    time.sleep(0.2)  # let any duplicate show up
    assert sorted(got) == list(range(100))
    assert set(got.values()) == {1}
    assert sorted(everything) == list(range(100))


def test_wildcard_group_pattern_follows_topic_semantics(make_redis: Callable[..., object]) -> None:
    """A group on ``a.*`` gets ``a.x`` but not ``a.x.y``; one on ``a.**`` gets ``a`` too."""
    publisher, consumer = make_redis(), make_redis()
    base = f"w{os.urandom(4).hex()}"
    one: list[str] = []
    deep: list[str] = []
    consumer.subscribe(f"{base}.*", lambda m: one.append(m.topic), group="one")  # type: ignore[attr-defined]
    consumer.subscribe(f"{base}.**", lambda m: deep.append(m.topic), group="deep")  # type: ignore[attr-defined]
    for topic in (base, f"{base}.x", f"{base}.x.y", f"{base}x.z"):
        publisher.send(Message(topic, None))  # type: ignore[attr-defined]
    publisher.send(Message(f"{base}.end", None))  # type: ignore[attr-defined]
    assert _wait(lambda: f"{base}.end" in one and f"{base}.end" in deep)
    assert sorted(one) == sorted([f"{base}.x", f"{base}.end"])
    assert sorted(deep) == sorted([base, f"{base}.x", f"{base}.x.y", f"{base}.end"])


def test_each_message_handled_once_across_processes(
    redis_server: RedisServer, make_redis: Callable[..., object], spawn: Callable[..., object]
) -> None:
    """Two member processes share a group: every message runs exactly once, on one of them."""
    topic, group = f"orders.p{os.urandom(4).hex()}", f"billing{os.urandom(3).hex()}"
    spawn("group", redis_server.url, topic, group)
    spawn("group", redis_server.url, topic, group)
    publisher = make_redis()
    count = 200
    for n in range(count):
        publisher.send(Message(topic, n))  # type: ignore[attr-defined]
    client = publisher.client  # type: ignore[attr-defined]
    assert _wait(lambda: client.llen(f"effects:{group}") >= count)
    time.sleep(0.3)
    effects = [e.decode() for e in client.lrange(f"effects:{group}", 0, -1)]
    payloads = Counter(int(e.split(":")[1]) for e in effects)
    assert sorted(payloads) == list(range(count))
    assert set(payloads.values()) == {1}, "a message was handled twice"
    assert len({e.split(":")[0] for e in effects}) == 2, "both processes should take a share"


def test_rpc_servers_sharing_a_service_name_answer_each_call_once(
    redis_server: RedisServer, make_redis: Callable[..., object], spawn: Callable[..., object]
) -> None:
    """RPC servers in two processes share ``_rpc.<service>``; replies reach the caller's inbox."""
    from eventforge.queue import MessageQueue
    from eventforge.rpc import RPCClient

    service = f"calc{os.urandom(3).hex()}"
    spawn("rpc", redis_server.url, service)
    spawn("rpc", redis_server.url, service)
    client = RPCClient(
        MessageQueue(transport=make_redis(), close_transport=False), service, timeout=10
    )  # type: ignore[arg-type]
    assert [client.call("add", n, 1) for n in range(30)] == [n + 1 for n in range(30)]
    pids = {client.call("whoami") for _ in range(30)}
    assert len(pids) == 2, f"both servers should answer some calls, got {pids}"


def test_last_member_leaving_removes_the_group(make_redis: Callable[..., object]) -> None:
    """After the last member unsubscribes, publishes are no longer routed into its stream."""
    transport = make_redis()
    topic = f"leave.t{os.urandom(4).hex()}"
    sub = transport.subscribe(topic, lambda m: None, group="gone")  # type: ignore[attr-defined]
    client = transport.client  # type: ignore[attr-defined]
    assert client.smembers(f"eventforge:groups:exact:{topic}")
    transport.unsubscribe(sub)  # type: ignore[attr-defined]
    assert not client.smembers(f"eventforge:groups:exact:{topic}")
    transport.send(Message(topic, 1))  # type: ignore[attr-defined]
    transport.flush()  # type: ignore[attr-defined]
    assert not client.exists(f"eventforge:group:gone:{topic}")
    assert transport.stats()["routed_to_groups"] == 0  # type: ignore[attr-defined]


def test_entries_of_a_killed_member_are_taken_over(
    redis_server: RedisServer, make_redis: Callable[..., object], spawn: Callable[..., object]
) -> None:
    """R-ST row 3 for groups: a member SIGKILLed mid-handler leaves its entry pending; another
    member takes it over after ``claim_idle`` (a redelivery, counted), then forgets the dead one."""
    topic, group = f"claim.t{os.urandom(4).hex()}", f"claimers{os.urandom(3).hex()}"
    child = spawn("group", redis_server.url, topic, group)
    publisher = make_redis()
    client = publisher.client  # type: ignore[attr-defined]
    publisher.send(Message(topic, "hang-1"))  # type: ignore[attr-defined]
    assert _wait(lambda: client.llen(f"effects:{group}") == 1)
    child.kill()  # type: ignore[attr-defined]
    child.wait(10)  # type: ignore[attr-defined]
    survivor = make_redis(claim_idle=0.3)
    got: list[object] = []
    survivor.subscribe(topic, lambda m: got.append(m.payload), group=group)  # type: ignore[attr-defined]
    assert _wait(lambda: got == ["hang-1"])
    assert survivor.stats()["group_redelivered"] == 1  # type: ignore[attr-defined]
    stream = f"eventforge:group:{group}:{topic}"
    assert _wait(lambda: len(client.xinfo_consumers(stream, group)) == 1)
    print(f"lost=0 redelivered=1 effects={client.llen(f'effects:{group}') + len(got)}")


def test_subscription_status_asks_redis_for_the_group_and_counts_its_loss(
    make_redis: Callable[..., object],
) -> None:
    """A member's status says whether Redis still holds its group; a group destroyed under a
    blocked reader is recreated by the member and counted as lost."""
    transport = make_redis(block=0.2)
    topic = f"status.t{os.urandom(4).hex()}"
    got: list[object] = []
    sub = transport.subscribe(topic, got.append, group="watched")  # type: ignore[attr-defined]
    plain = transport.subscribe(topic, lambda m: None)  # type: ignore[attr-defined]
    status = transport.subscription_status  # type: ignore[attr-defined]
    assert (status(sub).present, status(sub).lost, status(sub).backlog) == (True, 0, 0)
    assert status(plain).present
    assert not status("redis-group-999").present
    transport.client.xgroup_destroy(f"eventforge:group:watched:{topic}", "watched")  # type: ignore[attr-defined]
    assert _wait(lambda: status(sub).lost == 1)
    assert _wait(lambda: status(sub).present)  # made again by the member
    transport.send(Message(topic, "after"))  # type: ignore[attr-defined]
    assert _wait(lambda: len(got) == 1)
