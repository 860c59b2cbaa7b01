"""Redis transport beside raw redis-py, in the same run, against a private redis-server.

Scenarios:

* Fire-and-forget publish throughput, no subscribers: ``RedisTransport.send`` x N + ``flush``
  vs raw ``PUBLISH`` one per round trip (goal: at least 5x) and vs raw ``PUBLISH`` pipelined
  100 at a time (goal: at least 0.7x).
* End-to-end pub/sub, publisher process -> subscriber process: eventforge on both ends vs raw
  redis-py on both ends (pipeline-100 publisher, ``PubSub.get_message`` subscriber parsing each
  envelope with ``pydantic_core.from_json``, the fastest JSON parse a raw client has; the
  anchor uses no eventforge code, so eventforge's own decoder is measured, not shared)
  (goal: at least 0.8x).
* Durable work queue end to end, producer -> consumer process: ``WorkQueue.put`` per item from
  one thread, ``WorkQueue.put`` from 8 threads (concurrent puts share round trips), and the
  backend's ``put_many`` vs raw ``XADD`` per message -> ``XREADGROUP COUNT 100`` + ``XACK`` per
  batch (goal: at least 2x). One synchronous put per item from one thread is bound by the round
  trip, like the anchor's producer, so that row cannot reach 2x; the other two show batching.

Every figure is the median of interleaved rounds. The consumer and subscriber run in child
processes started before the clock starts; the clock stops when the child reports the last
message.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from _common import finish_child, row, start_child
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_redis import RedisTransport

PAYLOAD = {"user": "alice", "action": "login", "n": 1}


def medians(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure())
    return {k: statistics.median(v) for k, v in samples.items()}


# -- publish ------------------------------------------------------------------------------------


def publish_eventforge(url: str, n: int) -> float:
    transport = RedisTransport.from_url(url)
    send, messages = transport.send, [Message("bench.pub", PAYLOAD) for _ in range(n)]
    start = time.perf_counter()
    for message in messages:
        send(message)
    transport.flush()
    elapsed = time.perf_counter() - start
    transport.close()
    return n / elapsed


def _raw_envelopes(n: int) -> list[bytes]:
    from eventforge.wire import encode_envelope

    return [encode_envelope(Message("bench.pub", PAYLOAD)) for _ in range(n)]


def publish_raw(url: str, n: int, pipe: int) -> float:
    client = redis.Redis.from_url(url)
    client.ping()
    from eventforge.wire import encode_envelope

    start = time.perf_counter()
    if pipe <= 1:
        for _ in range(n):
            client.publish("bench.pub", encode_envelope(Message("bench.pub", PAYLOAD)))
    else:
        for offset in range(0, n, pipe):
            p = client.pipeline(transaction=False)
            for _ in range(min(pipe, n - offset)):
                p.publish("bench.pub", encode_envelope(Message("bench.pub", PAYLOAD)))
            p.execute()
    elapsed = time.perf_counter() - start
    client.close()
    return n / elapsed


# -- child processes ----------------------------------------------------------------------------

CHILD = r"""
import sys, time
mode, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "sub_raw":
    import pydantic_core
    import redis
    client = redis.Redis.from_url(url)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("bench.e2e")
    while ps.get_message(timeout=1.0) is None and not ps.subscribed:
        pass
    print("ready", flush=True)
    got = 0
    while got < n:
        m = ps.get_message(timeout=5.0)
        if m is None:
            continue
        pydantic_core.from_json(m["data"])
        got += 1
    print("done", flush=True)
elif mode == "sub_ef":
    import threading
    from eventforge_redis import RedisTransport
    t = RedisTransport.from_url(url)
    done = threading.Event()
    count = [0]
    def on(m):
        count[0] += 1
        if count[0] >= n:
            done.set()
    t.subscribe("bench.e2e", on)
    print("ready", flush=True)
    done.wait()
    print("done", flush=True)
elif mode == "wq_raw":
    import redis
    client = redis.Redis.from_url(url)
    stream = sys.argv[4]
    try:
        client.xgroup_create(stream, "g", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    print("ready", flush=True)
    got = 0
    while got < n:
        reply = client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
        for _s, entries in reply or ():
            ids = [e[0] for e in entries]
            got += len(ids)
            client.xack(stream, "g", *ids)
    print("done", flush=True)
elif mode == "wq_ef":
    import threading
    from eventforge.workqueue import RetryPolicy, WorkQueue
    from eventforge_redis import RedisTransport
    t = RedisTransport.from_url(url)
    q = WorkQueue(sys.argv[4], transport=t, retry=RetryPolicy())
    done = threading.Event()
    count = [0]
    lock = threading.Lock()
    def on(m):
        with lock:
            count[0] += 1
            if count[0] >= n:
                done.set()
    print("ready", flush=True)
    c = q.consume(on, concurrency=1)
    done.wait()
    print("done", flush=True)
    c.stop()
"""


def _child(mode: str, url: str, n: int, *extra: str) -> subprocess.Popen[str]:
    return start_child(CHILD, mode, url, str(n), *extra)


def e2e_raw(url: str, n: int) -> float:
    child = _child("sub_raw", url, n)
    client = redis.Redis.from_url(url)
    envelopes = _raw_envelopes(n)
    start = time.perf_counter()
    for offset in range(0, n, 100):
        p = client.pipeline(transaction=False)
        for data in envelopes[offset : offset + 100]:
            p.publish("bench.e2e", data)
        p.execute()
    rate = finish_child(child, start, n)
    client.close()
    return rate


def e2e_eventforge(url: str, n: int) -> float:
    child = _child("sub_ef", url, n)
    transport = RedisTransport.from_url(url)
    messages = [Message("bench.e2e", PAYLOAD) for _ in range(n)]
    start = time.perf_counter()
    for message in messages:
        transport.send(message)
    rate = finish_child(child, start, n)
    transport.close()
    return rate


def wq_raw(url: str, n: int) -> float:
    stream = f"bench-raw-{os.urandom(4).hex()}"
    child = _child("wq_raw", url, n, stream)
    client = redis.Redis.from_url(url)
    envelopes = _raw_envelopes(n)
    start = time.perf_counter()
    for data in envelopes:
        client.xadd(stream, {"data": data})
    rate = finish_child(child, start, n)
    client.delete(stream)
    client.close()
    return rate


def wq_eventforge(url: str, n: int, mode: str) -> float:
    """``mode``: "put" (one thread, WorkQueue.put per item), "threads" (8 threads calling
    WorkQueue.put; concurrent puts share round trips) or "put_many" (WorkQueue.put_many, 100
    per call)."""
    import threading

    name = f"bench-{os.urandom(4).hex()}"
    child = _child("wq_ef", url, n, name)
    transport = RedisTransport.from_url(url)
    queue = WorkQueue(name, transport=transport, retry=RetryPolicy())
    payloads = [PAYLOAD] * n

    def put_share(count: int) -> None:
        for _ in range(count):
            queue.put(PAYLOAD)

    start = time.perf_counter()
    if mode == "put_many":
        for offset in range(0, n, 100):
            queue.put_many(payloads[offset : offset + 100])
    elif mode == "threads":
        threads = [threading.Thread(target=put_share, args=(n // 8,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        put_share(n)
    rate = finish_child(child, start, n)
    transport.client.delete(f"eventforge:wq:{name}")
    queue.close()
    transport.close()
    return rate


def run(quick: bool) -> list[dict[str, Any]]:
    n_pub = 2_000 if quick else 30_000
    n_unpiped = 500 if quick else 5_000
    n_e2e = 2_000 if quick else 30_000
    n_wq = 800 if quick else 10_000
    rounds = 1 if quick else 3
    server = RedisServer()
    server.start()
    url = server.url
    try:
        pub = medians(
            rounds,
            {
                "ef": lambda: publish_eventforge(url, n_pub),
                "raw1": lambda: publish_raw(url, n_unpiped, 1),
                "raw100": lambda: publish_raw(url, n_pub, 100),
            },
        )
        e2e = medians(
            rounds,
            {"ef": lambda: e2e_eventforge(url, n_e2e), "raw": lambda: e2e_raw(url, n_e2e)},
        )
        wq = medians(
            rounds,
            {
                "ef": lambda: wq_eventforge(url, n_wq, "put"),
                "ef_threads": lambda: wq_eventforge(url, n_wq, "threads"),
                "ef_batch": lambda: wq_eventforge(url, n_wq, "put_many"),
                "raw": lambda: wq_raw(url, n_wq),
            },
        )
    finally:
        server.cleanup()
    return [
        row("redis publish (send + flush), 0 subscribers", pub["ef"],
            "redis-py PUBLISH unpipelined", pub["raw1"], "msgs/s", ">= 5x"),
        row("redis publish (send + flush), 0 subscribers", pub["ef"],
            "redis-py PUBLISH pipeline 100", pub["raw100"], "msgs/s", ">= 0.7x"),
        row("redis pub/sub e2e, publisher -> subscriber process", e2e["ef"],
            "redis-py pipe-100 PUBLISH -> get_message", e2e["raw"], "msgs/s", ">= 0.8x"),
        row("redis WorkQueue e2e (WorkQueue.put per item)", wq["ef"],
            "XADD per msg -> XREADGROUP 100 + XACK", wq["raw"], "msgs/s", ">= 2x"),
        row("redis WorkQueue e2e (WorkQueue.put from 8 threads)", wq["ef_threads"],
            "XADD per msg -> XREADGROUP 100 + XACK", wq["raw"], "msgs/s", ">= 3x"),
        row("redis WorkQueue e2e (WorkQueue.put_many of 100)", wq["ef_batch"],
            "XADD per msg -> XREADGROUP 100 + XACK", wq["raw"], "msgs/s", ">= 2x"),
    ]  # fmt: skip


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['scenario']:<55} {r['eventforge']:>10,.0f} vs {r['anchor']:<42} "
              f"{r['anchor_value']:>10,.0f}  ratio {r['ratio']:.2f} (goal {r['goal']})")  # fmt: skip
