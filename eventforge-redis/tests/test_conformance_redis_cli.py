"""Interop: plain redis-cli sees the documented JSON envelope, and envelopes it writes are consumed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable

import pytest
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.workqueue import RetryPolicy, WorkQueue

pytestmark = pytest.mark.broker

ENVELOPE_KEYS = {
    "version",
    "id",
    "topic",
    "payload",
    "headers",
    "timestamp",
    "reply_to",
    "correlation_id",
}


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_redis_cli_subscribe_shows_the_envelope(
    redis_server: RedisServer, make_redis: Callable[..., object]
) -> None:
    """``redis-cli SUBSCRIBE`` prints exactly the JSON envelope eventforge published."""
    topic = f"interop.sub{os.urandom(3).hex()}"
    cli = subprocess.Popen(
        ["redis-cli", "-p", str(redis_server.port), "--raw", "SUBSCRIBE", topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        for _ in range(3):  # "subscribe", channel, count
            cli.stdout.readline()
        transport = make_redis()
        sent = Message(topic, {"order": 7}, {"source": "interop"})
        transport.send(sent)  # type: ignore[attr-defined]
        transport.flush()  # type: ignore[attr-defined]
        lines = [cli.stdout.readline() for _ in range(3)]  # "message", channel, data
    finally:
        cli.kill()
        cli.wait(10)
    raw = lines[2].strip()
    envelope = json.loads(raw)
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["version"] == 1
    assert envelope["id"] == sent.id
    assert envelope["topic"] == topic
    assert envelope["payload"] == {"order": 7}
    assert envelope["headers"] == {"source": "interop"}


def test_redis_cli_xrange_shows_the_envelope(
    redis_server: RedisServer, make_redis: Callable[..., object]
) -> None:
    """A work item is one stream entry with a ``data`` field holding the envelope."""
    name = f"interop-{os.urandom(3).hex()}"
    queue = WorkQueue(name, transport=make_redis(), retry=RetryPolicy())  # type: ignore[arg-type]
    message_id = queue.put({"job": 1})
    out = subprocess.run(
        [
            "redis-cli",
            "-p",
            str(redis_server.port),
            "--raw",
            "XRANGE",
            f"eventforge:wq:{name}",
            "-",
            "+",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[1] == "data"
    envelope = json.loads(out[2])
    assert envelope["id"] == message_id
    assert envelope["payload"] == {"job": 1}
    queue.close()


def test_envelopes_written_by_redis_cli_are_consumed(
    redis_server: RedisServer, make_redis: Callable[..., object]
) -> None:
    """A non-eventforge producer (redis-cli) publishes and XADDs envelopes; both are consumed."""
    transport = make_redis()
    topic = f"interop.in{os.urandom(3).hex()}"
    got: list[Message] = []
    transport.subscribe(topic, got.append)  # type: ignore[attr-defined]
    envelope = json.dumps({"version": 1, "id": "cli-1", "topic": topic, "payload": {"from": "cli"}})
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "PUBLISH", topic, envelope], check=True, capture_output=True)
    assert _wait(lambda: len(got) == 1)
    assert (got[0].id, got[0].payload) == ("cli-1", {"from": "cli"})

    name = f"interop-in-{os.urandom(3).hex()}"
    queue = WorkQueue(name, transport=transport, retry=RetryPolicy())  # type: ignore[arg-type]
    item = json.dumps({"version": 1, "id": "cli-2", "topic": name, "payload": [1, 2]})
    subprocess.run(
        [*cli, "XADD", f"eventforge:wq:{name}", "*", "data", item], check=True, capture_output=True
    )
    delivery = queue.get(timeout=10)
    assert delivery is not None
    assert (delivery.message.id, delivery.message.payload, delivery.attempt) == ("cli-2", [1, 2], 1)
    delivery.ack()
    queue.close()


def test_poison_item_lands_in_the_dead_letter_stream(
    redis_server: RedisServer, make_redis: Callable[..., object]
) -> None:
    """After exactly ``max_attempts`` failures the item is in ``<stream>:dead`` (visible with
    XRANGE) with its reason and attempts, and no longer in the queue."""
    name = f"poison-{os.urandom(3).hex()}"
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, jitter=0.0)
    queue = WorkQueue(name, transport=make_redis(), retry=policy)  # type: ignore[arg-type]
    queue.put("poison")
    queue.put("fine")
    calls: list[object] = []

    def handler(message: Message) -> None:
        calls.append(message.payload)
        if message.payload == "poison":
            raise ValueError("always fails")

    consumer = queue.consume(handler)
    assert _wait(lambda: len(queue.dead_letters()) == 1 and "fine" in calls)
    consumer.stop()
    assert calls.count("poison") == 3
    assert calls.count("fine") == 1
    out = subprocess.run(
        [
            "redis-cli",
            "-p",
            str(redis_server.port),
            "--raw",
            "XRANGE",
            f"eventforge:wq:{name}:dead",
            "-",
            "+",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    fields = dict(zip(out[1::2], out[2::2]))
    assert fields["attempts"] == "3"
    assert "failed 3 of 3 attempts" in fields["reason"]
    assert json.loads(fields["data"])["payload"] == "poison"
    assert queue.stats["pending"] == 0
    queue.close()
