"""local:// bounded backlogs: every overflow policy, on named and on unnamed subscriptions.

An unnamed subscription's backlog is what it has not yet taken from the shared log, counted in
its owner's panel; a subscriber whose handler is stuck on its first message stops taking, so
what is published after it waits, up to the bound.
"""

from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.transports.local import BacklogFull, LocalTransport

CHILD = str(Path(__file__).with_name("_local_child.py"))


@pytest.fixture
def opened() -> Iterator[list[LocalTransport]]:
    made: list[LocalTransport] = []
    yield made
    for transport in made:
        transport.close()


def open_local(made: list[LocalTransport], path: Path, **options: object) -> LocalTransport:
    transport = LocalTransport(path, **options)
    made.append(transport)
    return transport


class Child:
    """A ``_local_child.py`` process whose stdout lines are read with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, *args], stdout=subprocess.PIPE, text=True
        )
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def line(self) -> str:
        return self._lines.get(timeout=20)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.kill()


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state ``T`` in ``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


class Stuck:
    """A handler that holds on to the first message until released, and records the rest."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, message: Message) -> None:
        self.entered.set()
        self.release.wait(20)
        self.got.append(message.payload)


def unnamed(transport: LocalTransport, sid: str) -> dict[str, Any]:
    (info,) = [s for s in transport.subscriptions() if s["id"] == f"u:{sid}"]
    return info


def drop_lines(caplog: pytest.LogCaptureFixture) -> int:
    return sum("at its bound" in r.getMessage() for r in caplog.records)


# -- named subscriptions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", [7, 8, 9]), ("drop_newest", [0, 1, 2])]
)
def test_full_named_backlog_drops_by_policy_and_counts(
    tmp_path: Path,
    opened: list[LocalTransport],
    overflow: str,
    kept: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = open_local(opened, tmp_path)
    sid = t.subscribe("q", lambda m: None, durable="slow", max_messages=3, overflow=overflow)
    t.unsubscribe(sid)
    with caplog.at_level(logging.WARNING, logger="eventforge.transports.local"):
        for n in range(10):
            t.send(Message("q", n))
    assert drop_lines(caplog) == 1  # the first drop at once, the rest in the next period
    (info,) = t.subscriptions()
    assert info["backlog"] == 3
    assert info["dropped"] == 7
    assert t.stats()["dropped"] == 7
    got: list[int] = []
    t.subscribe("q", lambda m: got.append(m.payload), durable="slow")
    assert wait_until(lambda: len(got) == 3, timeout=10)
    assert got == kept


def test_refuse_policy_raises_and_stores_the_message_nowhere(
    tmp_path: Path, opened: list[LocalTransport]
) -> None:
    t = open_local(opened, tmp_path)
    sid = t.subscribe("q", lambda m: None, durable="strict", max_messages=2, overflow="refuse")
    t.unsubscribe(sid)
    other: list[Message] = []
    t.subscribe("q", other.append)  # a second subscription: the refusal is all-or-nothing
    t.send(Message("q", 1))
    t.send(Message("q", 2))
    with pytest.raises(BacklogFull, match="'strict' holds 2 messages"):
        t.send(Message("q", 3))
    assert wait_until(lambda: len(other) == 2, timeout=10)
    assert [m.payload for m in other] == [1, 2]
    assert t.stats()["dropped"] == 1


def test_backlog_bound_in_bytes(tmp_path: Path, opened: list[LocalTransport]) -> None:
    t = open_local(opened, tmp_path)
    sid = t.subscribe("q", lambda m: None, durable="b", max_bytes=2000, max_messages=10**6)
    t.unsubscribe(sid)
    for n in range(100):
        t.send(Message("q", "x" * 100 + str(n)))
    (info,) = t.subscriptions()
    assert info["backlog_bytes"] <= 2000
    assert info["dropped"] == 100 - info["backlog"]


# -- unnamed subscriptions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", [0, 8, 9, 10]), ("drop_newest", [0, 1, 2, 3])]
)
def test_unnamed_backlog_drops_by_policy_counts_and_logs(
    tmp_path: Path,
    opened: list[LocalTransport],
    overflow: str,
    kept: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = open_local(opened, tmp_path)
    publisher = open_local(opened, tmp_path)
    handler = Stuck()
    sid = subscriber.subscribe("q", handler, max_messages=3, overflow=overflow)
    with caplog.at_level(logging.WARNING, logger="eventforge.transports.local"):
        publisher.send(Message("q", 0))
        assert handler.entered.wait(10)  # 0 is taken; what follows waits in the store
        for n in range(1, 11):
            publisher.send(Message("q", n))
        assert wait_until(lambda: unnamed(publisher, sid)["backlog"] == 3, timeout=10)
        assert subscriber.subscription_status(sid).backlog == 3
        # drop_oldest is applied by the subscriber's reader, drop_newest by the publisher
        dropper = subscriber if overflow == "drop_oldest" else publisher
        assert wait_until(lambda: dropper.stats()["dropped"] == 7, timeout=10)
        assert wait_until(lambda: unnamed(publisher, sid)["dropped"] == 7, timeout=10)
        handler.release.set()
        assert wait_until(lambda: len(handler.got) == 4, timeout=10)
    assert handler.got == kept
    assert drop_lines(caplog) == 1


def test_unnamed_backlog_bound_in_bytes(tmp_path: Path, opened: list[LocalTransport]) -> None:
    subscriber = open_local(opened, tmp_path)
    publisher = open_local(opened, tmp_path)
    handler = Stuck()
    sid = subscriber.subscribe("q", handler, max_bytes=2000, max_messages=10**6)
    publisher.send(Message("q", 0))
    assert handler.entered.wait(10)
    big = 10**100  # an envelope of a few hundred bytes
    for n in range(1, 101):
        publisher.send(Message("q", n * big))
    assert wait_until(lambda: unnamed(publisher, sid)["backlog_bytes"] <= 2000, timeout=10)
    kept = unnamed(publisher, sid)["backlog"]
    assert 1 < kept < 20
    assert wait_until(lambda: subscriber.stats()["dropped"] == 100 - kept, timeout=10)
    handler.release.set()
    assert wait_until(lambda: len(handler.got) == 1 + kept, timeout=10)
    assert handler.got == [0, *(n * big for n in range(101 - kept, 101))]


def test_unnamed_refuse_raises_in_the_publisher_naming_the_process(
    tmp_path: Path, children: list[Child]
) -> None:
    # The subscriber is another process: its backlog is counted in its own panel, which the
    # publisher reads.
    child = Child("stuck", str(tmp_path), "q", "2", "refuse")
    children.append(child)
    sid = child.line().split()[1]
    with LocalTransport(tmp_path) as publisher:
        other: list[int] = []
        publisher.subscribe("q", lambda m: other.append(m.payload))
        assert publisher.send_counted(Message("q", 0)) == 2
        assert child.line() == "0"  # taken; its handler never returns
        publisher.send(Message("q", 1))
        publisher.send(Message("q", 2))
        with pytest.raises(BacklogFull) as refused:
            publisher.send(Message("q", 3))
        assert refused.value.subscription == sid
        pid = child.proc.pid
        assert f"unnamed subscription {sid!r} on 'q' of process {pid}" in str(refused.value)
        assert "holds 2 messages" in str(refused.value)
        assert publisher.stats()["dropped"] == 1
        assert unnamed(publisher, sid)["backlog"] == 2
        # Refused for everyone: the other subscription never gets 3.
        assert wait_until(lambda: len(other) == 3, timeout=10)
        assert other == [0, 1, 2]


def test_a_stopped_subscriber_is_moved_up_to_its_bound_by_the_sweeper(
    tmp_path: Path, children: list[Child]
) -> None:
    # While its process is stopped nobody takes its oldest messages away: the sweeper of
    # another process does, once it has seen it not move for a whole sweep.
    child = Child("watch", str(tmp_path), "q", "5")
    children.append(child)
    sid = child.line().split()[1]
    with LocalTransport(tmp_path, sweep_interval=3600) as publisher:
        publisher.send(Message("q", 0))
        assert child.line() == "0"
        child.proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: stopped(child.proc.pid), timeout=10)
        for n in range(1, 21):
            publisher.send(Message("q", n))
        assert publisher.sweep()["lagging"] == 0  # first seen over its bound: given time
        assert publisher.sweep()["lagging"] == 1  # still not moved: moved down to its bound
        assert unnamed(publisher, sid)["dropped"] == 15
        child.proc.send_signal(signal.SIGCONT)
        assert [int(child.line()) for _ in range(5)] == [16, 17, 18, 19, 20]
        # It counted its backlog afresh: nothing waits, nothing was dropped twice.
        ok = wait_until(lambda: unnamed(publisher, sid)["backlog"] == 0, timeout=10)
        assert ok, unnamed(publisher, sid)
        assert unnamed(publisher, sid)["dropped"] == 15
