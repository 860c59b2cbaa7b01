"""The thread-based connection supervisor of the transport kit: the loop of ``Supervisor`` for
clients with blocking sockets. First attempt loud, later losses ridden out on its own thread."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventforge.transport import Backoff, ThreadSupervisor


class Link:
    """A stand-in connection factory: ``serve`` blocks until the test drops the link."""

    def __init__(self) -> None:
        self.failures: list[BaseException] = []
        self.connects = 0
        self.restored: list[int] = []
        self.released: list[int] = []
        self.drops: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self.serving = threading.Event()

    def connect(self) -> int:
        if self.failures:
            raise self.failures.pop(0)
        self.connects += 1
        return self.connects

    def serve(self, conn: int) -> None:
        self.serving.set()
        exc = self.drops.get()
        self.serving.clear()
        if exc is not None:
            raise exc

    def restore(self, conn: int) -> None:
        self.restored.append(conn)

    def release(self, conn: int) -> None:
        self.released.append(conn)

    def drop(self, exc: BaseException | None = None) -> None:
        self.drops.put(exc)


def make(link: Link, **kw: Any) -> ThreadSupervisor[int]:
    return ThreadSupervisor(
        "test-supervisor",
        link.connect,
        link.serve,
        restore=link.restore,
        release=link.release,
        interrupt=lambda: link.drop(),
        backoff=Backoff(initial=0.001, cap=0.01, jitter=0),
        **kw,
    )


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """A watchdog, not a timing assertion."""
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline, f"stalled waiting for {what}"
        time.sleep(0.002)


def test_first_connect_error_raises_unchanged_without_retry_or_thread() -> None:
    link = Link()
    link.failures = [PermissionError("bad password"), OSError("never tried")]
    sup = make(link)
    with pytest.raises(PermissionError, match="bad password"):
        sup.start()
    assert len(link.failures) == 1, "the first attempt must not be retried"
    assert sup.state == "failed"
    assert not sup.running


def test_lost_connection_is_reconnected_after_transient_failures_and_restored() -> None:
    link = Link()
    sup = make(link)
    assert sup.start() == 1
    assert link.restored == [], "the connection start() made is not restored"
    link.failures = [OSError("refused"), OSError("refused")]
    link.drop(ConnectionResetError("gone"))
    wait_for(lambda: sup.current == 2, "the reconnect")
    assert link.restored == [2]
    assert link.released == [1]
    stats = sup.stats()
    assert stats["reconnects"] == 1
    assert stats["disconnects"] == 1
    assert stats["failed_connect_attempts"] == 2
    assert stats["state"] == "connected"
    assert stats["last_recovery"] is not None
    assert "gone" in stats["last_error"] or "refused" in stats["last_error"]
    sup.stop()
    assert not sup.running
    assert sup.state == "stopped"


def test_background_start_retries_the_first_connect_and_restores_it() -> None:
    link = Link()
    link.failures = [OSError("not yet"), OSError("not yet")]
    sup = make(link)
    sup.start_in_background()
    wait_for(lambda: sup.current == 1, "the first connection")
    assert link.restored == [1], "a connection the thread made is restored"
    stats = sup.stats()
    assert (stats["connects"], stats["reconnects"], stats["failed_connect_attempts"]) == (1, 0, 2)
    sup.stop()


def test_fatal_error_while_reconnecting_stops_and_is_reported_once() -> None:
    link = Link()
    failed: list[BaseException] = []
    sup = make(link, fatal=lambda exc: isinstance(exc, PermissionError), on_failed=failed.append)
    sup.start()
    link.failures = [OSError("refused"), PermissionError("password changed")]
    link.drop()
    wait_for(lambda: not sup.running, "the supervisor to give up")
    assert sup.state == "failed"
    assert sup.failed_attempts.value == 2
    assert [str(e) for e in failed] == ["password changed"]


def test_fatal_error_from_serve_ends_supervision_without_reconnecting() -> None:
    link = Link()
    failed: list[BaseException] = []
    sup = make(link, fatal=lambda exc: isinstance(exc, PermissionError), on_failed=failed.append)
    sup.start()
    link.drop(PermissionError("ACL changed"))
    wait_for(lambda: not sup.running, "the supervisor to give up")
    assert link.connects == 1
    assert link.released == [1]
    assert sup.state == "failed"
    assert len(failed) == 1


def test_a_failed_restore_discards_the_connection_and_tries_again() -> None:
    link = Link()
    attempts: list[int] = []

    def restore(conn: int) -> None:
        attempts.append(conn)
        if len(attempts) == 1:
            raise OSError("resubscribe failed")

    sup = ThreadSupervisor(
        "test-supervisor",
        link.connect,
        link.serve,
        restore=restore,
        release=link.release,
        interrupt=lambda: link.drop(),
        backoff=Backoff(initial=0.001, cap=0.01, jitter=0),
    )
    sup.start()
    link.drop()
    wait_for(lambda: sup.current == 3, "the second reconnect attempt")
    assert attempts == [2, 3]
    assert link.released == [1, 2]
    assert sup.failed_attempts.value == 1
    sup.stop()


def test_stop_interrupts_serve_and_ends_the_thread_without_reconnecting() -> None:
    link = Link()
    sup = make(link)
    sup.start()
    wait_for(link.serving.is_set, "serve to run")
    sup.stop()
    assert not sup.running
    assert link.connects == 1
    assert sup.disconnects.value == 0, "a stop is not a disconnect"
    assert sup.state == "stopped"


def test_stop_ends_a_backoff_wait_at_once() -> None:
    link = Link()
    sup = ThreadSupervisor(
        "test-supervisor",
        link.connect,
        link.serve,
        interrupt=lambda: link.drop(),
        backoff=Backoff(initial=3600, cap=3600, jitter=0),
    )
    sup.start()
    link.failures = [OSError("down")]
    link.drop()
    wait_for(lambda: sup.state == "reconnecting", "the loss to be seen")
    sup.stop(timeout=None)  # would hang for an hour if the wait were not interruptible
    assert not sup.running


def test_a_supervisor_starts_once() -> None:
    link = Link()
    sup = make(link)
    sup.start()
    with pytest.raises(RuntimeError, match="starts once"):
        sup.start_in_background()
    sup.stop()


def test_serve_loops_can_poll_stopping_and_sleep() -> None:
    """``stopping()`` and ``sleep`` let a polling serve loop end promptly on stop."""
    rounds: list[int] = []

    def serve(conn: int) -> None:
        while not sup.stopping():
            rounds.append(conn)
            sup.sleep(0.001)

    sup: ThreadSupervisor[int] = ThreadSupervisor("poller", lambda: 7, serve)
    sup.start()
    wait_for(lambda: len(rounds) >= 3, "a few rounds")
    assert sup.in_thread() is False
    sup.stop()
    assert not sup.running
    assert set(rounds) == {7}
