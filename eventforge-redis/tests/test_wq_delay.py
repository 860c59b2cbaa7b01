"""Delayed puts and retries on Redis: kept on the server until due, precise to about 50 ms; 100k
items three days away cost the server a bounded amount each and the client nothing; AOF keeps
them through a SIGKILL."""

from __future__ import annotations

import gc
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import redis
from eventforge.testing.brokers import RedisServer
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_redis import RedisTransport

pytestmark = pytest.mark.broker


def _collect(queue: WorkQueue, n: int, timeout: float = 10.0) -> list[tuple[Any, float]]:
    out: list[tuple[Any, float]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        delivery = queue.get(timeout=0.5)
        if delivery is not None:
            out.append((delivery.message.payload, time.time()))
            delivery.ack()
    return out


def test_delayed_items_are_delivered_no_earlier_than_their_time(
    make_redis: Callable[..., Any],
) -> None:
    transport = make_redis()
    queue = WorkQueue(f"delay-{time.time_ns()}", transport)
    put_at: dict[int, float] = {}
    for n in range(10):
        put_at[n] = time.time()
        queue.put(n, delay=0.2 + n * 0.05)
    queue.put("now")
    got = _collect(queue, 11)
    assert got[0][0] == "now"
    lateness = []
    for payload, at in got[1:]:
        due = put_at[payload] + 0.2 + payload * 0.05
        assert at >= due - 0.002, f"item {payload} came {due - at:.3f} s early"
        lateness.append(at - due)
    print(
        f"\nredis delayed put: {len(lateness)} items, lateness p50 "
        f"{statistics.median(lateness) * 1000:.0f} ms, max {max(lateness) * 1000:.0f} ms"
    )
    assert queue.stats["delayed"] == 0
    queue.close()


def test_a_delayed_item_waits_on_the_server_not_in_a_consumer(
    make_redis: Callable[..., Any],
) -> None:
    name = f"delay-server-{time.time_ns()}"
    producer = WorkQueue(name, make_redis())
    producer.put("later", delay=0.5)
    assert producer.stats["delayed"] == 1
    producer.close()
    consumer = WorkQueue(name, make_redis())  # another client: nothing held in memory
    assert consumer.get(timeout=0.1) is None
    got = consumer.get(timeout=5)
    assert got is not None
    assert got.message.payload == "later"
    assert got.attempt == 1
    got.ack()
    consumer.close()


def test_a_short_retry_delay_is_no_longer_rounded_up_to_half_a_second(
    make_redis: Callable[..., Any],
) -> None:
    queue = WorkQueue(
        f"retry-{time.time_ns()}",
        make_redis(),
        retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, jitter=0),
    )
    queue.put("flaky")
    first = queue.get(timeout=5)
    assert first is not None
    nacked = time.time()
    first.nack(delay=0.15)
    second = queue.get(timeout=5)
    assert second is not None
    assert second.attempt == 2
    waited = time.time() - nacked
    assert waited >= 0.15
    print(f"\nredis nack(delay=0.15): redelivered after {waited * 1000:.0f} ms")
    second.ack()
    queue.close()


def test_a_hundred_thousand_delayed_items_wait_on_the_server_at_a_bounded_cost(
    make_redis: Callable[..., Any], redis_server: RedisServer
) -> None:
    """100,000 items three days away: each scored at the server's time plus three days, none
    handed out, no thread or timer per item, nothing kept in the client; the server's memory
    per item is printed (and bounded)."""
    transport = make_redis()
    name = f"delay-many-{time.time_ns()}"
    queue = WorkQueue(name, transport)
    server = redis.Redis.from_url(redis_server.url)
    stream = queue.backend.stream  # type: ignore[attr-defined]
    used_before = int(server.info("memory")["used_memory"])
    threads = threading.active_count()
    three_days = 3 * 86_400
    total, chunk = 100_000, 10_000
    for start in range(0, total - chunk, chunk):
        queue.put_many(list(range(start, start + chunk)), delay=three_days)
    tracemalloc.start()  # the last chunk: what the client keeps per item
    gc.collect()
    kept_before = tracemalloc.get_traced_memory()[0]
    queue.put_many(list(range(total - chunk, total)), delay=three_days)
    gc.collect()
    client_per_item = (tracemalloc.get_traced_memory()[0] - kept_before) / chunk
    tracemalloc.stop()
    server_per_item = (int(server.info("memory")["used_memory"]) - used_before) / total
    assert queue.stats["delayed"] == total
    assert threading.active_count() == threads
    seconds, micros = server.time()
    first = server.zrange(f"{stream}:delayed", 0, 0, withscores=True)[0][1]
    last = server.zrange(f"{stream}:delayed", -1, -1, withscores=True)[0][1]
    now_ms = seconds * 1000 + micros / 1000
    assert now_ms + three_days * 1000 - 120_000 <= first <= last <= now_ms + three_days * 1000
    assert queue.get(timeout=0.2) is None
    print(
        f"\nredis 100k delayed items: server {server_per_item:.0f} B per item, client "
        f"{client_per_item:.1f} B per item, threads {threads} -> {threading.active_count()}"
    )
    assert client_per_item < 16
    assert server_per_item < 2048
    server.delete(stream, f"{stream}:delayed", f"{stream}:delayed:items")
    server.close()


@pytest.mark.slow
def test_a_server_killed_with_aof_keeps_every_delayed_item_and_delivers_none_early(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """With AOF, delayed items survive a SIGKILL and restart of redis-server: lost 0, none
    before its time; those due while the server was down come when it is back."""
    server = redis_server_factory(appendonly=True)
    options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    name = f"delay-aof-{time.time_ns()}"
    producer_t = RedisTransport.from_url(server.url, **options)
    producer = WorkQueue(name, producer_t)
    total = 40
    due: dict[int, float] = {}
    for n in range(total):
        start = time.time()
        producer.put(n, delay=0.5 + n * 0.1)  # due over 0.5 .. 4.4 s: before and after the kill
        due[n] = start + 0.5 + n * 0.1
    producer_t.close()
    server.kill()
    time.sleep(1.0)  # items come due while the server is down
    server.start()
    consumer_t = RedisTransport.from_url(server.url, **options)
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
        f"\nredis-server SIGKILL (AOF) with delayed items: put={total} delivered={len(arrived)} "
        f"lost={len(lost)} early={len(early)} duplicates={duplicates}"
    )
    assert not lost, f"lost: {lost}"
    assert not early, f"came before their time: {early}"
