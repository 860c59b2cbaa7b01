"""AMQP transport beside raw aio-pika and pika, in the same run, against a private RabbitMQ node.

Scenarios (every figure the median of interleaved rounds):

* Pub/sub end to end, publisher (this process) -> subscriber process: eventforge ``send`` on
  both ends vs aio-pika ``exchange.publish`` -> an aio-pika consumer that ``json.loads`` each
  body, and vs pika ``BlockingConnection.basic_publish`` -> the same consumer. Goals: >= 3x
  aio-pika, >= 1.0x pika.
* RPC round trip p50 / p99: ``RPCClient.call`` (sync) against an ``RPCServer`` process, and
  ``AmqpTransport.request``, vs aio-pika direct reply-to against an aio-pika responder.
  Goal: p50 <= 0.7x aio-pika.
* Durable work queue: ``put_many`` (100 per batch, confirms awaited together) vs aio-pika
  confirmed publish one at a time to a quorum queue (goal >= 3x) and with 100 in flight
  (reported); ``fetch(100)`` + ack per item vs an aio-pika consumer with prefetch 100 acking
  each message (goal >= 2x).
* Delayed work items: ``WorkQueue.put_many(..., delay=2)`` (through the delay levels) beside
  the plain ``put_many`` (reported), and the delivery-time error of a delayed put (arrival minus
  due time, p50 / p99, items due 0.5 .. 1.5 s after their put, a consumer waiting) beside the
  put-to-delivery latency of a plain put (reported).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import aio_pika
import pika
from _common import (
    WARM_UP,
    delay_error_and_latency,
    finish_child,
    medians,
    percentiles,
    row,
    start_child,
)
from eventforge import MessageQueue, RPCClient
from eventforge.message import Message
from eventforge.testing.rabbit import RabbitServer
from eventforge.wire import encode_envelope
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_amqp import AmqpTransport

PAYLOAD = {"user": "alice", "action": "login", "n": 1}


CHILD = r"""
import asyncio, json, sys, threading
mode, url, n, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "sub_raw":
    import aio_pika
    async def main():
        conn = await aio_pika.connect(url)
        ch = await conn.channel()
        ex = await ch.declare_exchange("eventforge", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue("", exclusive=True)
        await q.bind(ex, key)
        done = asyncio.get_running_loop().create_future()
        count = 0
        async def on(message):
            nonlocal count
            json.loads(message.body)
            count += 1
            if count >= n and not done.done():
                done.set_result(None)
        await q.consume(on, no_ack=True)
        print("ready", flush=True)
        await done
        print("done", flush=True)
        await conn.close()
    asyncio.run(main())
elif mode == "sub_ef":
    from eventforge_amqp import AmqpTransport
    t = AmqpTransport(url)
    done = threading.Event()
    count = [0]
    def on(m):
        count[0] += 1
        if count[0] >= n:
            done.set()
    t.subscribe(key, on)
    print("ready", flush=True)
    done.wait()
    print("done", flush=True)
    t.close()
elif mode == "echo_raw":
    import aio_pika
    async def main():
        conn = await aio_pika.connect(url)
        ch = await conn.channel()
        ex = await ch.declare_exchange("eventforge", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue("", exclusive=True)
        await q.bind(ex, key)
        async def on(message):
            await ch.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to, mandatory=False)
        await q.consume(on, no_ack=True)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await conn.close()
    asyncio.run(main())
elif mode == "echo_ef":
    from eventforge import MessageQueue, RPCServer
    from eventforge_amqp import AmqpTransport
    queue = MessageQueue(transport=AmqpTransport(url, delivery="loop"))
    server = RPCServer(queue, service_name="bench", threaded=False)
    server.add_method("echo", lambda x: x)
    server.serve(blocking=False)
    print("ready", flush=True)
    sys.stdin.readline()
    server.stop()
    queue.close()
"""


def _child(mode: str, url: str, n: int = 0, key: str = "bench.e2e") -> subprocess.Popen[str]:
    return start_child(CHILD, mode, url, str(n), key)


def _stop(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    child.wait(30)


def _key() -> str:
    return f"bench.e2e.{os.urandom(3).hex()}"


# -- pub/sub end to end --------------------------------------------------------------------


def e2e_eventforge(url: str, n: int) -> float:
    key = _key()
    child = _child("sub_ef", url, n, key)
    t = AmqpTransport(url)
    start = time.perf_counter()
    for _ in range(n):
        t.send(Message(key, PAYLOAD))
    rate = finish_child(child, start, n)
    t.close()
    return rate


def e2e_aio_pika(url: str, n: int) -> float:
    key = _key()
    body = encode_envelope(Message(key, PAYLOAD))

    async def main() -> float:
        conn = await aio_pika.connect(url)
        ch = await conn.channel(publisher_confirms=False)
        ex = await ch.declare_exchange("eventforge", aio_pika.ExchangeType.TOPIC, durable=True)
        child = _child("sub_raw", url, n, key)
        start = time.perf_counter()
        for _ in range(n):
            await ex.publish(aio_pika.Message(body), routing_key=key)
        rate = await asyncio.to_thread(finish_child, child, start, n)
        await conn.close()
        return rate

    return asyncio.run(main())


def e2e_pika(url: str, n: int) -> float:
    key = _key()
    body = encode_envelope(Message(key, PAYLOAD))
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    child = _child("sub_raw", url, n, key)
    start = time.perf_counter()
    for _ in range(n):
        ch.basic_publish("eventforge", key, body)
    rate = finish_child(child, start, n)
    conn.close()
    return rate


# -- RPC -------------------------------------------------------------------------------------


def rpc_eventforge(url: str, n: int) -> tuple[float, float]:
    child = _child("echo_ef", url)
    queue = MessageQueue(transport=AmqpTransport(url))
    client = RPCClient(queue, "bench")
    samples = []
    for i in range(n + WARM_UP):
        start = time.perf_counter()
        client.call("echo", i, timeout=10)
        samples.append(time.perf_counter() - start)
    queue.close()
    _stop(child)
    return percentiles(samples[WARM_UP:])


def rpc_eventforge_async(url: str, n: int) -> tuple[float, float]:
    """``await RPCClient.call_async`` on a transport bound to the caller's loop: the same shape
    as the aio-pika anchor (publish and reply on one loop, no thread hops)."""
    child = _child("echo_ef", url)

    async def main() -> list[float]:
        async with MessageQueue(await AmqpTransport.connect_async(url)) as queue:
            client = RPCClient(queue, "bench")
            samples = []
            for i in range(n + WARM_UP):
                start = time.perf_counter()
                await client.call_async("echo", i, timeout=10)
                samples.append(time.perf_counter() - start)
            return samples[WARM_UP:]

    samples = asyncio.run(main())
    _stop(child)
    return percentiles(samples)


def request_transport(url: str, n: int) -> tuple[float, float]:
    key = _key()
    child = _child("echo_raw", url, 0, key)
    t = AmqpTransport(url)
    samples = []
    for i in range(n + WARM_UP):
        start = time.perf_counter()
        t.request(Message(key, i), timeout=10)
        samples.append(time.perf_counter() - start)
    t.close()
    _stop(child)
    return percentiles(samples[WARM_UP:])


def rpc_aio_pika(url: str, n: int) -> tuple[float, float]:
    key = _key()
    child = _child("echo_raw", url, 0, key)
    body = encode_envelope(Message(key, 1))

    async def main() -> list[float]:
        conn = await aio_pika.connect(url)
        ch = await conn.channel(publisher_confirms=False)
        ex = await ch.get_exchange("eventforge")
        replies: asyncio.Queue[Any] = asyncio.Queue()
        reply_queue = await ch.get_queue("amq.rabbitmq.reply-to", ensure=False)

        async def on(message: Any) -> None:
            await replies.put(message)

        await reply_queue.consume(on, no_ack=True)
        samples = []
        for i in range(n + WARM_UP):
            start = time.perf_counter()
            await ex.publish(
                aio_pika.Message(body, reply_to="amq.rabbitmq.reply-to", correlation_id=str(i)),
                routing_key=key,
            )
            await replies.get()
            samples.append(time.perf_counter() - start)
        await conn.close()
        return samples[WARM_UP:]

    samples = asyncio.run(main())
    _stop(child)
    return percentiles(samples)


# -- durable work queue ---------------------------------------------------------------------


def wq_eventforge(url: str, n: int) -> tuple[float, float]:
    t = AmqpTransport(url, prefetch=100)
    backend = t.work_queue_backend(f"bench{os.urandom(3).hex()}", RetryPolicy())
    batch = [Message("job", PAYLOAD) for _ in range(100)]
    start = time.perf_counter()
    for _ in range(n // 100):
        backend.put_many([Message("job", PAYLOAD) for _ in batch])
    put_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    got = 0
    while got < n:
        for delivery in backend.fetch(100, timeout=5):
            delivery.ack()
            got += 1
    consume_rate = n / (time.perf_counter() - start)
    t.close()
    return put_rate, consume_rate


def wq_aio_pika(url: str, n: int, in_flight: int) -> tuple[float, float]:
    body = json.dumps(PAYLOAD).encode()

    async def main() -> tuple[float, float]:
        conn = await aio_pika.connect(url)
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(
            f"raw{os.urandom(3).hex()}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        start = time.perf_counter()
        for _ in range(n // in_flight):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(message, routing_key=q.name)
                    for _ in range(in_flight)
                )
            )
        put_rate = n / (time.perf_counter() - start)
        await ch.set_qos(prefetch_count=100)
        done = asyncio.get_running_loop().create_future()
        count = 0

        async def on(incoming: Any) -> None:
            nonlocal count
            json.loads(incoming.body)
            await incoming.ack()
            count += 1
            if count >= n and not done.done():
                done.set_result(None)

        start = time.perf_counter()
        await q.consume(on)
        await done
        consume_rate = n / (time.perf_counter() - start)
        await q.delete(if_unused=False, if_empty=False)
        await conn.close()
        return put_rate, consume_rate

    return asyncio.run(main())


def delayed_eventforge(url: str, n: int, timed: int) -> tuple[float, ...]:
    """Plain and delayed put_many rates, then the delivery error of delayed puts (ms) and the
    put-to-delivery latency of plain puts (ms), each as p50, p99."""
    t = AmqpTransport(url, prefetch=100)
    queue = WorkQueue(f"bench{os.urandom(3).hex()}", t)
    queue.put("warm-up", delay=0.01)  # the first delayed put declares the delay levels
    rates = []
    for delay in (None, 2.0):
        start = time.perf_counter()
        for _ in range(n // 100):
            queue.put_many([PAYLOAD] * 100, delay=delay)
        rates.append(n // 100 * 100 / (time.perf_counter() - start))
    got = 0
    while got < n // 100 * 200 + 1:
        delivery = queue.get(timeout=10)
        assert delivery is not None, f"only {got} items came back"
        delivery.ack()
        got += 1
    timed_figures = delay_error_and_latency(queue, timed)
    queue.close()
    t.close()
    return (rates[0], rates[1], *timed_figures)


def run(quick: bool) -> list[dict[str, Any]]:
    n_e2e = 1_000 if quick else 20_000
    n_rpc = 100 if quick else 5_000
    n_wq = 500 if quick else 5_000
    n_one = 100 if quick else 1_000
    n_timed = 20 if quick else 200
    rounds = 1 if quick else 3
    node = RabbitServer()
    node.start()
    url = node.url
    try:
        e2e = medians(
            rounds,
            {
                "ef": lambda: e2e_eventforge(url, n_e2e),
                "aio": lambda: e2e_aio_pika(url, n_e2e),
                "pika": lambda: e2e_pika(url, n_e2e),
            },
        )
        rpc = medians(
            rounds,
            {
                "ef": lambda: rpc_eventforge(url, n_rpc),
                "async": lambda: rpc_eventforge_async(url, n_rpc),
                "transport": lambda: request_transport(url, n_rpc),
                "aio": lambda: rpc_aio_pika(url, n_rpc),
            },
        )
        wq = medians(
            rounds,
            {
                "ef": lambda: wq_eventforge(url, n_wq),
                "one": lambda: wq_aio_pika(url, n_one, 1),
                "batch": lambda: wq_aio_pika(url, n_wq, 100),
            },
        )
        delayed = medians(rounds, {"ef": lambda: delayed_eventforge(url, n_wq, n_timed)})["ef"]
    finally:
        node.cleanup()
    return [
        row("amqp pub/sub e2e, sync send -> subscriber process", e2e["ef"],
            "aio-pika publish -> aio-pika consumer json.loads", e2e["aio"], "msgs/s", ">= 3x"),
        row("amqp pub/sub e2e, sync send -> subscriber process", e2e["ef"],
            "pika BlockingConnection publish -> same consumer", e2e["pika"], "msgs/s", ">= 1.0x"),
        row("amqp RPC p50, sync RPCClient.call -> RPCServer process", rpc["ef"][0],
            "aio-pika direct reply-to p50", rpc["aio"][0], "us", "<= 0.7x",
            higher_is_better=False),
        row("amqp RPC p50, call_async on connect_async -> RPCServer process", rpc["async"][0],
            "aio-pika direct reply-to p50", rpc["aio"][0], "us", "<= 0.7x",
            higher_is_better=False),
        row("amqp RPC p99, call_async on connect_async -> RPCServer process", rpc["async"][1],
            "aio-pika direct reply-to p99", rpc["aio"][1], "us", "reported",
            higher_is_better=False),
        row("amqp RPC p99, sync RPCClient.call -> RPCServer process", rpc["ef"][1],
            "aio-pika direct reply-to p99", rpc["aio"][1], "us", "reported",
            higher_is_better=False),
        row("AmqpTransport.request p50 -> aio-pika responder", rpc["transport"][0],
            "aio-pika direct reply-to p50", rpc["aio"][0], "us", "reported",
            higher_is_better=False),
        row("amqp WorkQueue put_many (100 per batch, confirms)", wq["ef"][0],
            "aio-pika confirmed publish, one at a time", wq["one"][0], "msgs/s", ">= 3x"),
        row("amqp WorkQueue put_many (100 per batch, confirms)", wq["ef"][0],
            "aio-pika confirmed publish, 100 in flight", wq["batch"][0], "msgs/s", "reported"),
        row("amqp WorkQueue fetch(100) + ack", wq["ef"][1],
            "aio-pika consume prefetch 100 + ack", wq["batch"][1], "msgs/s", ">= 2x"),
        row("amqp WorkQueue put_many(100, delay=2) via delay levels", delayed[1],
            "amqp WorkQueue put_many(100), not delayed", delayed[0], "msgs/s", "reported"),
        row("amqp delayed put: arrival - due time, p50", delayed[2],
            "plain put -> get latency p50", delayed[4], "ms", "reported",
            higher_is_better=False),
        row("amqp delayed put: arrival - due time, p99", delayed[3],
            "plain put -> get latency p99", delayed[5], "ms", "reported",
            higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['scenario']:<55} {r['eventforge']:>10,.0f} vs {r['anchor']:<48} "
              f"{r['anchor_value']:>10,.0f}  ratio {r['ratio']:.2f} (goal {r['goal']})")  # fmt: skip
