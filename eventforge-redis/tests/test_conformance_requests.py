"""Requests over Redis: nobody listening fails fast, and a call never runs after its deadline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eventforge.errors import NoRespondersError, RPCTimeout
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient
from eventforge.testing import wait_until
from eventforge.testing.brokers import RedisServer
from eventforge.testing.deadline_checks import check_expired_request_never_reaches_a_handler

pytestmark = pytest.mark.broker

CHILD = str(Path(__file__).with_name("_child.py"))
Make = Callable[..., object]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start child processes (killed after the test)."""
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


def _queue(make_redis: Make) -> MessageQueue:
    return MessageQueue(transport=make_redis(), close_transport=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("subscribe", ["plain", "group", "wildcard"])
def test_request_to_nobody_fails_fast_and_any_responder_counts(
    make_redis: Make, subscribe: str
) -> None:
    """A request nobody listens to raises NoRespondersError at once (counted); a plain, group
    or wildcard subscriber in another transport counts as a responder."""
    asker, answerer = _queue(make_redis), _queue(make_redis)
    root = f"svc{os.urandom(3).hex()}"
    with pytest.raises(NoRespondersError, match=root):
        asker.request(f"{root}.echo", 1, timeout=30)
    assert asker.stats["no_responders"] == 1
    pattern = f"{root}.*" if subscribe == "wildcard" else f"{root}.echo"
    group = "echoers" if subscribe == "group" else None
    answerer.subscribe(pattern, lambda m: answerer.reply(m, m.payload), group=group)

    def answered() -> bool:
        try:
            return asker.request(f"{root}.echo", 2, timeout=2) is not None
        except NoRespondersError:  # the subscription is still being made
            return False

    assert wait_until(answered)
    asker.close()
    answerer.close()


def test_request_past_its_deadline_never_reaches_a_handler(make_redis: Make) -> None:
    """A request that timed out in a busy handler's backlog is skipped and counted, not run."""
    server, client = _queue(make_redis), _queue(make_redis)
    topic = f"deadline.t{os.urandom(3).hex()}"
    check_expired_request_never_reaches_a_handler(server, client, topic)
    server.close()
    client.close()


def test_calls_queued_for_a_killed_rpc_server_never_run_when_it_returns(
    redis_server: RedisServer, make_redis: Make, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    """An RPC server process is SIGKILLed; its group stays registered, so calls made meanwhile
    wait in the group's stream and time out. A new server reading that stream skips them
    (past their deadline) and runs only the calls made after it started."""
    service = f"ledger{os.urandom(3).hex()}"
    child = spawn("rpc", redis_server.url, service)
    client = RPCClient(_queue(make_redis), service, timeout=5)
    redis = make_redis().client  # type: ignore[attr-defined]
    assert client.call("record", "before") == 1
    child.kill()
    child.wait(10)
    quick = RPCClient(client.queue, service, timeout=0.2)
    for n in range(3):
        with pytest.raises(RPCTimeout):
            quick.call("record", f"stale-{n}")
    spawn("rpc", redis_server.url, service)
    assert client.call("record", "after") == 2
    assert [e.decode() for e in redis.lrange(f"effects:{service}", 0, -1)] == ["before", "after"]
    client.queue.close()
