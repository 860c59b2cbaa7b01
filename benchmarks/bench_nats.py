"""NATS transport beside raw nats-py, in the same run, against a private nats-server.

Scenarios:

* End-to-end pub/sub, publisher process -> subscriber process: eventforge on both ends (the
  publisher using ``send_async`` on its own loop via ``NatsTransport.connect_async``, the same
  from a classic transport whose connection lives on the background loop, then the synchronous
  ``send``) vs raw nats-py on both ends (``nc.publish`` x N + flush). Goals: at least 0.8x from
  the async API, 0.6x from the sync API.
* RPC round trip p50 / p99 vs raw ``nc.request`` against a raw responder process, both on
  event loops. The like-for-like eventforge shape (goal: p50 at most 1.3x): ``await
  RPCClient.call_async`` on a transport made with ``NatsTransport.connect_async`` (it lives on
  the caller's loop) against an ``RPCServer`` tuned for fast handlers (``delivery="loop"``,
  ``threaded=False``). Reported beside it: the synchronous ``RPCClient.call`` against a
  default server (thread hand-offs on both sides: caller -> loop -> caller, loop -> handler
  thread -> loop), the sync call against the tuned server, and ``NatsTransport.request``.
* JetStream durable work queue: publish with 100 in flight (``put_many`` of 100 vs
  ``asyncio.gather`` of 100 ``js.publish``), and consume (``fetch(100)`` + ack per item vs a raw
  pull subscription ``fetch(100)`` + ``ack``). Goals: at least 0.8x on both sides.
* JetStream delayed work items (message schedules): ``put_many(100, delay=3600)`` beside the
  plain ``put_many(100)``; the delivery-time error of a delayed put (arrival minus due time,
  p50 / p99, items due 0.5 .. 1.5 s after their put, a consumer waiting) beside the
  put-to-delivery latency of a plain put (all reported).

Every figure is the median of interleaved rounds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import nats
from _common import (
    WARM_UP,
    delay_error_and_latency,
    finish_child,
    medians,
    percentiles,
    row,
    start_child,
)
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.wire import encode_envelope
from eventforge.workqueue import RetryPolicy
from eventforge_nats import NatsTransport

PAYLOAD = {"user": "alice", "action": "login", "n": 1}


CHILD = r"""
import asyncio, sys
mode, url, n, option = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "sub_raw":
    import json
    parse = json.loads if option == "json" else bytes
    import nats
    async def main():
        nc = await nats.connect(url)
        done = asyncio.get_running_loop().create_future()
        count = 0
        async def on(msg):
            nonlocal count
            parse(msg.data)
            count += 1
            if count >= n and not done.done():
                done.set_result(None)
        await nc.subscribe("bench.e2e", cb=on)
        await nc.flush()
        print("ready", flush=True)
        await done
        print("done", flush=True)
        await nc.close()
    asyncio.run(main())
elif mode == "sub_ef":
    import threading
    from eventforge_nats import NatsTransport
    t = NatsTransport(url, delivery=option)
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
    t.close()
elif mode == "echo_raw":
    import nats
    async def main():
        nc = await nats.connect(url)
        async def on(msg):
            await msg.respond(msg.data)
        await nc.subscribe("bench.echo", cb=on)
        await nc.flush()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await nc.close()
    asyncio.run(main())
elif mode == "echo_transport":
    from eventforge.message import Message
    from eventforge_nats import NatsTransport
    t = NatsTransport(url, delivery=option)
    t.subscribe("bench.echo", lambda m: t.send(Message(m.reply_to, m.payload)))
    print("ready", flush=True)
    sys.stdin.readline()
    t.close()
elif mode == "echo_ef":
    from eventforge import MessageQueue, RPCServer
    from eventforge_nats import NatsTransport
    inline = option == "inline"
    queue = MessageQueue(transport=NatsTransport(url, delivery="thread" if inline else option))
    # On the loop, a fast handler needs no worker thread of its own; inline=True runs the
    # method on the connection's loop with the default (thread) delivery.
    server = RPCServer(queue, service_name="bench", inline=inline,
                       threaded=None if option in ("thread", "inline") else False)
    server.add_method("echo", lambda x: x)
    server.serve(blocking=False)
    print("ready", flush=True)
    sys.stdin.readline()
    server.stop()
    queue.close()
"""


def _child(mode: str, url: str, n: int = 0, option: str = "") -> subprocess.Popen[str]:
    return start_child(CHILD, mode, url, str(n), option or "-")


def _stop(child: subprocess.Popen[str]) -> None:
    """Tell a responder child to finish (a line on its stdin) and wait for it."""
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    child.wait(30)


# -- pub/sub end to end --------------------------------------------------------------------


def e2e_raw(url: str, n: int, parse: str) -> float:
    envelopes = [encode_envelope(Message("bench.e2e", PAYLOAD)) for _ in range(n)]

    async def main() -> float:
        nc = await nats.connect(url)
        child = _child("sub_raw", url, n, parse)
        start = time.perf_counter()
        for data in envelopes:
            await nc.publish("bench.e2e", data)
        await nc.flush()
        rate = await asyncio.to_thread(finish_child, child, start, n)
        await nc.close()
        return rate

    return asyncio.run(main())


def e2e_eventforge_async(
    url: str, n: int, delivery: str = "thread", *, bound: bool = True
) -> float:
    """``send_async`` from the publisher's loop: on a transport living on that loop
    (``connect_async``, like the raw publisher) or, with ``bound=False``, on a classic
    transport whose connection lives on eventforge's background loop."""
    messages = [Message("bench.e2e", PAYLOAD) for _ in range(n)]

    async def main() -> float:
        if bound:
            transport = await NatsTransport.connect_async(url)
        else:
            transport = await asyncio.to_thread(NatsTransport, url)
        child = _child("sub_ef", url, n, delivery)
        send = transport.send_async
        start = time.perf_counter()
        for message in messages:
            await send(message)
        await transport.flush_async()
        rate = await asyncio.to_thread(finish_child, child, start, n)
        await transport.close_async()
        return rate

    return asyncio.run(main())


def e2e_eventforge_sync(url: str, n: int) -> float:
    transport = NatsTransport(url)
    messages = [Message("bench.e2e", PAYLOAD) for _ in range(n)]
    child = _child("sub_ef", url, n, "thread")
    send = transport.send
    start = time.perf_counter()
    for message in messages:
        send(message)
    transport.flush()
    rate = finish_child(child, start, n)
    transport.close()
    return rate


# -- request / reply -----------------------------------------------------------------------


def rpc_raw(url: str, n: int) -> tuple[float, float]:
    child = _child("echo_raw", url)
    data = encode_envelope(Message("bench.echo", PAYLOAD))

    async def main() -> list[float]:
        nc = await nats.connect(url)
        samples = []
        for _ in range(n + WARM_UP):
            start = time.perf_counter()
            await nc.request("bench.echo", data, timeout=5)
            samples.append(time.perf_counter() - start)
        await nc.close()
        return samples

    samples = asyncio.run(main())
    _stop(child)
    return percentiles(samples[WARM_UP:])


def rpc_eventforge(url: str, n: int, delivery: str = "thread") -> tuple[float, float]:
    from eventforge import MessageQueue, RPCClient

    child = _child("echo_ef", url, option=delivery)
    queue = MessageQueue(transport=NatsTransport(url))
    client = RPCClient(queue, service_name="bench", timeout=5.0)
    samples = []
    for _ in range(n + WARM_UP):
        start = time.perf_counter()
        client.call("echo", PAYLOAD)
        samples.append(time.perf_counter() - start)
    queue.close()
    _stop(child)
    return percentiles(samples[WARM_UP:])


def rpc_eventforge_async(url: str, n: int) -> tuple[float, float]:
    """``await RPCClient.call_async`` on a transport bound to the caller's loop, against an
    RPC server tuned for fast handlers: the same shape as the raw anchor (all on loops)."""
    from eventforge import MessageQueue, RPCClient

    child = _child("echo_ef", url, option="loop")

    async def main() -> list[float]:
        async with MessageQueue(await NatsTransport.connect_async(url)) as queue:
            client = RPCClient(queue, service_name="bench", timeout=5.0)
            samples = []
            for _ in range(n + WARM_UP):
                start = time.perf_counter()
                await client.call_async("echo", PAYLOAD)
                samples.append(time.perf_counter() - start)
            return samples

    samples = asyncio.run(main())
    _stop(child)
    return percentiles(samples[WARM_UP:])


def request_transport(url: str, n: int) -> tuple[float, float]:
    child = _child("echo_transport", url, option="loop")
    transport = NatsTransport(url)
    message = Message("bench.echo", PAYLOAD)
    samples = []
    for _ in range(n + WARM_UP):
        start = time.perf_counter()
        transport.request(message, 5.0)
        samples.append(time.perf_counter() - start)
    transport.close()
    _stop(child)
    return percentiles(samples[WARM_UP:])


# -- JetStream work queue ------------------------------------------------------------------


def js_raw(url: str, n: int, msg_id: bool = False) -> tuple[float, float]:
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

    name = f"RAW_{os.urandom(4).hex()}"
    envelopes = [encode_envelope(Message("bench.js", PAYLOAD)) for _ in range(n)]

    async def main() -> tuple[float, float]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[name],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await js.add_consumer(
            name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
        )
        start = time.perf_counter()
        for offset in range(0, n, 100):
            batch = range(offset, min(n, offset + 100))
            await asyncio.gather(
                *(
                    js.publish(
                        name, envelopes[i], headers={"Nats-Msg-Id": f"m{i}"} if msg_id else None
                    )
                    for i in batch
                )
            )
        put_rate = n / (time.perf_counter() - start)
        psub = await js.pull_subscribe_bind(durable="c", stream=name)
        got = 0
        start = time.perf_counter()
        while got < n:
            for msg in await psub.fetch(100, timeout=5):
                await msg.ack()
                got += 1
        await nc.flush()
        get_rate = n / (time.perf_counter() - start)
        await js.delete_stream(name)
        await nc.close()
        return put_rate, get_rate

    return asyncio.run(main())


def js_eventforge(url: str, n: int) -> tuple[float, float]:
    transport = NatsTransport(url)
    name = f"bench-{os.urandom(4).hex()}"
    backend = transport.work_queue_backend(name, RetryPolicy())
    messages = [Message(name, PAYLOAD) for _ in range(n)]
    start = time.perf_counter()
    for offset in range(0, n, 100):
        backend.put_many(messages[offset : offset + 100])
    put_rate = n / (time.perf_counter() - start)
    got = 0
    start = time.perf_counter()
    while got < n:
        for delivery in backend.fetch(100, 5.0):
            delivery.ack()
            got += 1
    transport.flush()
    get_rate = n / (time.perf_counter() - start)
    transport.close()
    return put_rate, get_rate


def js_delayed(url: str, n: int, timed: int) -> tuple[float, ...]:
    """Plain and delayed ``put_many`` rates, then the delivery error of delayed puts (ms) and
    the put-to-delivery latency of plain puts (ms), each as p50, p99."""

    from eventforge.workqueue import WorkQueue

    transport = NatsTransport(url)
    rates = []
    for delay in (None, 3600.0):
        queue = WorkQueue(f"bench-{os.urandom(4).hex()}", transport)
        start = time.perf_counter()
        for offset in range(0, n, 100):
            queue.put_many([PAYLOAD] * min(100, n - offset), delay=delay)
        rates.append(n / (time.perf_counter() - start))
    timing = WorkQueue(f"bench-{os.urandom(4).hex()}", transport)
    timed_figures = delay_error_and_latency(timing, timed)
    transport.close()
    return (*rates, *timed_figures)


def run(quick: bool) -> list[dict[str, Any]]:
    n_e2e = 2_000 if quick else 50_000
    n_rpc = 200 if quick else 5_000
    n_js = 500 if quick else 10_000
    rounds = 1 if quick else 3
    server = NatsServer()
    server.start()
    url = server.url
    try:
        e2e = medians(
            rounds,
            {
                "async": lambda: e2e_eventforge_async(url, n_e2e),
                "async_bg": lambda: e2e_eventforge_async(url, n_e2e, bound=False),
                "sync": lambda: e2e_eventforge_sync(url, n_e2e),
                "loop": lambda: e2e_eventforge_async(url, n_e2e, "loop"),
                "raw": lambda: e2e_raw(url, n_e2e, "json"),
                "raw_count": lambda: e2e_raw(url, n_e2e, "count"),
            },
        )
        rpc = medians(
            rounds,
            {
                "ef": lambda: rpc_eventforge(url, n_rpc),
                "tuned": lambda: rpc_eventforge(url, n_rpc, "loop"),
                "inline": lambda: rpc_eventforge(url, n_rpc, "inline"),
                "async": lambda: rpc_eventforge_async(url, n_rpc),
                "transport": lambda: request_transport(url, n_rpc),
                "raw": lambda: rpc_raw(url, n_rpc),
            },
        )
        js = medians(
            rounds,
            {
                "ef": lambda: js_eventforge(url, n_js),
                "raw": lambda: js_raw(url, n_js),
                "raw_id": lambda: js_raw(url, n_js, msg_id=True),
                "delayed": lambda: js_delayed(url, n_js, 20 if quick else 200),
            },
        )
    finally:
        server.cleanup()
    return [
        row("nats pub/sub e2e, send_async (connect_async) -> subscriber process", e2e["async"],
            "nats-py publish -> subscriber json.loads", e2e["raw"], "msgs/s", ">= 0.8x"),
        row("nats pub/sub e2e, send_async (background-loop transport)", e2e["async_bg"],
            "nats-py publish -> subscriber json.loads", e2e["raw"], "msgs/s", "reported"),
        row("nats pub/sub e2e, sync send -> subscriber process", e2e["sync"],
            "nats-py publish -> subscriber json.loads", e2e["raw"], "msgs/s", ">= 0.6x"),
        row("nats pub/sub e2e, send_async -> subscriber process", e2e["async"],
            "nats-py publish -> subscriber counting only", e2e["raw_count"], "msgs/s", "reported"),
        row("nats pub/sub e2e, send_async -> subscriber delivery='loop'", e2e["loop"],
            "nats-py publish -> subscriber json.loads", e2e["raw"], "msgs/s", "reported"),
        row("nats RPC p50, call_async on connect_async -> server on its loop", rpc["async"][0],
            "nats-py nc.request p50", rpc["raw"][0], "us", "<= 1.2x", higher_is_better=False),
        row("nats RPC p50, sync RPCClient.call -> RPCServer(inline=True)", rpc["inline"][0],
            "nats-py nc.request p50", rpc["raw"][0], "us", "<= 1.2x", higher_is_better=False),
        row("nats RPC p99, sync RPCClient.call -> RPCServer(inline=True)", rpc["inline"][1],
            "nats-py nc.request p99", rpc["raw"][1], "us", "reported", higher_is_better=False),
        row("nats RPC p99, call_async on connect_async -> server on its loop", rpc["async"][1],
            "nats-py nc.request p99", rpc["raw"][1], "us", "reported", higher_is_better=False),
        row("nats RPC round trip p50 (sync RPCClient.call, default server)", rpc["ef"][0],
            "nats-py nc.request p50", rpc["raw"][0], "us", "reported", higher_is_better=False),
        row("nats RPC round trip p99 (sync RPCClient.call, default server)", rpc["ef"][1],
            "nats-py nc.request p99", rpc["raw"][1], "us", "reported", higher_is_better=False),
        row("nats RPC p50, sync call, server delivery='loop', threaded=False", rpc["tuned"][0],
            "nats-py nc.request p50", rpc["raw"][0], "us", "reported", higher_is_better=False),
        row("NatsTransport.request p50 (sync, responder delivery='loop')", rpc["transport"][0],
            "nats-py nc.request p50", rpc["raw"][0], "us", "reported", higher_is_better=False),
        row("NatsTransport.request p99 (responder delivery='loop')", rpc["transport"][1],
            "nats-py nc.request p99", rpc["raw"][1], "us", "reported", higher_is_better=False),
        row("JetStream WorkQueue put, 100 in flight (put_many)", js["ef"][0],
            "js.publish, gather of 100", js["raw"][0], "msgs/s", ">= 0.8x"),
        row("JetStream WorkQueue put, 100 in flight (put_many)", js["ef"][0],
            "js.publish with Nats-Msg-Id, gather of 100", js["raw_id"][0], "msgs/s", "reported"),
        row("JetStream WorkQueue fetch(100) + ack", js["ef"][1],
            "pull fetch(100) + ack", js["raw"][1], "msgs/s", ">= 0.8x"),
        row("JetStream WorkQueue put_many(100, delay=3600)", js["delayed"][1],
            "JetStream WorkQueue put_many(100), not delayed", js["delayed"][0], "msgs/s",
            "reported"),
        row("JetStream delayed put: arrival - due time, p50", js["delayed"][2],
            "plain put -> get latency p50", js["delayed"][4], "ms", "reported",
            higher_is_better=False),
        row("JetStream delayed put: arrival - due time, p99", js["delayed"][3],
            "plain put -> get latency p99", js["delayed"][5], "ms", "reported",
            higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['scenario']:<55} {r['eventforge']:>10,.0f} vs {r['anchor']:<45} "
              f"{r['anchor_value']:>10,.0f}  ratio {r['ratio']:.2f} (goal {r['goal']})")  # fmt: skip
