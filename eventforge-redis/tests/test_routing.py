"""send_counted over Redis: what the receiver count means, unroutable policies, and the route
script's wildcard matching (the same answers as eventforge.topics.topic_matches)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.errors import FrameTooLarge, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.queue._routing import REROUTED_FROM_HEADER, UnroutableError
from eventforge.testing.brokers import RedisServer
from eventforge.topics import topic_matches

pytestmark = pytest.mark.broker

TIMEOUT = 20.0


def _wait(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _topic(name: str) -> str:
    return f"un{os.urandom(4).hex()}.{name}"


def test_count_is_receivers_plus_group_streams(make_redis: Callable[..., Any]) -> None:
    """0 when nobody listens; a plain subscriber's connection counts once; each matching
    group counts once; every counted message reaches its receivers."""
    publisher, consumer, other = make_redis(), make_redis(), make_redis()
    topic = _topic("orders.created")
    assert publisher.send_counted(Message(topic, 0)) == 0

    plain: list[int] = []
    consumer.subscribe(topic, lambda m: plain.append(m.payload))
    assert publisher.send_counted(Message(topic, 1)) == 1

    grouped: list[Message] = []
    consumer.subscribe(topic.rsplit(".", 1)[0] + ".*", grouped.append, group="audit")
    assert publisher.send_counted(Message(topic, 2)) == 2  # the connection + one group stream
    other.subscribe(topic, lambda m: None)
    assert publisher.send_counted(Message(topic, 3)) == 3  # a second pub/sub connection
    assert _wait(lambda: plain == [1, 2, 3] and len(grouped) == 2)
    assert sorted(m.payload for m in grouped) == [2, 3]
    assert publisher.send_counted(Message(_topic("elsewhere"), 4)) == 0
    assert publisher.stats()["published"] == 5

    # The count is per Redis match, not per subscription: a second, wildcard subscription on
    # the same connection counts again; a second one on the same exact topic does not.
    consumer.subscribe(topic, lambda m: None)
    assert publisher.send_counted(Message(topic, 5)) == 3
    root = topic.split(".", 1)[0]
    consumer.subscribe(f"{root}.*", lambda m: None)  # glob "<root>.*" also matches dots
    assert publisher.send_counted(Message(topic, 6)) == 4
    assert _wait(lambda: consumer.stats()["filtered"] == 1)  # ... but the pattern does not


def test_group_alone_makes_a_message_routable(make_redis: Callable[..., Any]) -> None:
    """A competing-consumer group (no plain subscriber) counts, and its member gets the message."""
    publisher, worker = make_redis(), make_redis()
    topic = _topic("jobs")
    got: list[Message] = []
    worker.subscribe(topic, got.append, group="workers")
    worker.subscribe(topic, got.append, group="workers")  # two members: still one group
    assert publisher.send_counted(Message(topic, "job")) == 1
    assert _wait(lambda: len(got) == 1)
    time.sleep(0.2)  # a duplicate would show up meanwhile
    assert [m.payload for m in got] == ["job"]


def test_counted_publish_keeps_order_with_earlier_sends(make_redis: Callable[..., Any]) -> None:
    """send_counted goes behind the sends queued before it, from several threads at once."""
    publisher, consumer = make_redis(), make_redis()
    topic = _topic("ordered")
    got: list[tuple[int, int]] = []
    consumer.subscribe(topic, lambda m: got.append(tuple(m.payload)))

    def produce(thread: int) -> None:
        for n in range(300):
            message = Message(topic, [thread, n])
            if n % 10 == 9:
                assert publisher.send_counted(message) == 1
            else:
                publisher.send(message)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _wait(lambda: len(got) == 900)
    for t in range(3):
        assert [n for thread, n in got if thread == t] == list(range(300))


def test_queue_policies_over_redis(make_redis: Callable[..., Any]) -> None:
    """drop counts, return raises UnroutableError, reroute delivers on the alternate topic, and
    a message that a plain subscriber or a group takes is not unroutable."""
    listener = MessageQueue(make_redis())
    dropping = MessageQueue(make_redis(), unroutable="drop")
    strict = MessageQueue(make_redis(), unroutable="return")
    parking = _topic("parking")
    rerouting = MessageQueue(make_redis(), unroutable=f"reroute:{parking}")
    queues = [listener, dropping, strict, rerouting]
    try:
        nobody = _topic("nobody.listens")
        dropping.publish(nobody, 1)
        assert dropping.stats["unroutable"] == 1

        with pytest.raises(UnroutableError) as info:
            strict.publish(nobody, 2)
        assert info.value.message.topic == nobody
        assert strict.stats["unroutable"] == 1

        parked: list[Message] = []
        listener.subscribe(parking, parked.append)
        rerouting.publish(nobody, 3)
        assert _wait(lambda: len(parked) == 1)
        assert parked[0].payload == 3
        assert parked[0].headers[REROUTED_FROM_HEADER] == nobody
        assert rerouting.stats["unroutable"] == 1

        plain_topic, group_topic = _topic("plain"), _topic("grouped")
        plain: list[Any] = []
        grouped: list[Any] = []
        listener.subscribe(plain_topic, lambda m: plain.append(m.payload))
        listener.subscribe(group_topic, lambda m: grouped.append(m.payload), group="g")
        for queue in (dropping, strict, rerouting):
            queue.publish(plain_topic, "p")
            queue.publish(group_topic, "g")
        assert _wait(lambda: len(plain) == 3 and len(grouped) == 3)
        assert [q.stats["unroutable"] for q in (dropping, strict, rerouting)] == [1, 1, 1]
        assert len(parked) == 1  # nothing else was rerouted
    finally:
        for queue in reversed(queues):
            queue.close()


def test_send_counted_raises_like_send(
    make_redis: Callable[..., Any], redis_server_factory: Callable[..., RedisServer]
) -> None:
    """Oversize before anything is sent, a closed transport, and a dead server all raise."""
    small = make_redis(max_size=1024)
    with pytest.raises(FrameTooLarge):
        small.send_counted(Message(_topic("big"), "x" * 2048))
    assert small.stats()["published"] == 0

    server = redis_server_factory()
    from eventforge_redis import RedisTransport

    transport = RedisTransport.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        assert transport.send_counted(Message("down.t", 0)) == 0
        server.kill()
        with pytest.raises(TransportError) as info:
            transport.send_counted(Message("down.t", 1))
        print(f"link down: {info.value}")
        assert transport.stats()["publish_dropped"] >= 1
    finally:
        transport.close()
    with pytest.raises(TransportClosedError):
        transport.send_counted(Message("down.t", 2))


def test_acl_noperm_raises_from_send_counted(
    redis_server_factory: Callable[..., RedisServer],
    limited_user: Callable[[RedisServer], str],
) -> None:
    """A refused counted publish raises in its caller, once (not again from the next flush)."""

    from eventforge_redis import RedisPermissionError, RedisTransport

    server = redis_server_factory()
    url = limited_user(server)
    transport = RedisTransport.from_url(url)
    try:
        with pytest.raises(RedisPermissionError):
            transport.send_counted(Message("denied.x", 1))
        assert transport.flush(10)
        assert transport.send_counted(Message("allowed.x", 2)) == 0
        assert transport.stats()["publish_errors"] == 1
    finally:
        transport.close()


def test_route_script_matches_long_topics_with_many_double_wildcards(
    make_redis: Callable[..., Any],
) -> None:
    """Group patterns with several non-adjacent ``**`` against topics of 60-80 segments: routed
    when they match, not routed when they do not. A backtracking matcher needs about
    segments**5 steps for the second pattern on the missing topic, so its script would outlast
    the socket timeout and ``send_counted`` would raise instead of answering."""
    publisher, worker = make_redis(), make_redis()
    root = _topic("a").rsplit(".", 1)[0]
    got: list[str] = []
    worker.subscribe(f"{root}.a.**.x.**.y.**.z", lambda m: got.append(m.topic), group="deep")
    worker.subscribe(
        f"{root}.b.**.x.**.x.**.x.**.x.**.x.**.z", lambda m: got.append(m.topic), group="deeper"
    )
    filler = ".".join(["x", "y"] * 30)
    assert publisher.send_counted(Message(f"{root}.a.{filler}.q", 0)) == 0
    assert publisher.send_counted(Message(f"{root}.a.{filler}.z", 1)) == 1
    xs = ".".join(["x"] * 80)
    assert publisher.send_counted(Message(f"{root}.b.{xs}.q", 2)) == 0
    assert publisher.send_counted(Message(f"{root}.b.{xs}.z", 3)) == 1
    assert publisher.send_counted(Message(f"{root}.b.x.x.x.x.z", 4)) == 0  # needs five x
    assert _wait(lambda: sorted(got) == [f"{root}.a.{filler}.z", f"{root}.b.{xs}.z"])


PATTERNS = [
    "a",
    "a.*",
    "a.**",
    "**",
    "*",
    "*.b",
    "a.**.c",
    "**.c",
    "a.*.c",
    "a.**.**.c",
    "**.b.**",
    "a.**.b.**.c",
    "*.*.**",
]
TOPICS = ["a", "b", "a.b", "a.c", "a.b.c", "a.b.b.c", "x.b.y", "a.b.x.b.c", "c", "a.x.y.z.c"]


def test_route_script_agrees_with_topic_matches(make_redis: Callable[..., Any]) -> None:
    """Every registered group pattern is routed to exactly when topic_matches says so."""
    prefix = f"efm{os.urandom(4).hex()}"
    publisher = make_redis(key_prefix=prefix)
    client = publisher.client
    from eventforge_redis._routing import group_registry_entry, group_stream_key

    root = f"m{os.urandom(3).hex()}"
    streams = {}
    for pattern in PATTERNS:
        full = f"{root}.{pattern}" if pattern != "**" else f"{root}.**"
        stream = group_stream_key(prefix, "g", full)
        key, member = group_registry_entry(prefix, full, stream)
        client.sadd(key, member)
        streams[full] = stream
    try:
        for topic in TOPICS:
            full_topic = f"{root}.{topic}"
            expected = {p for p in streams if topic_matches(p, full_topic)}
            before = {p: client.xlen(s) for p, s in streams.items()}
            count = publisher.send_counted(Message(full_topic, topic))
            routed = {p for p, s in streams.items() if client.xlen(s) > before[p]}
            assert routed == expected, full_topic
            assert count == len(expected)
    finally:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
