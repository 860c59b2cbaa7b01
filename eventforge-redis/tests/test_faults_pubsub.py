"""Pub/sub under faults: a paused (half-open) server, a killed and restarted server.

Each test runs a publisher and a subscriber against a private redis-server, injects the fault
deterministically (SIGSTOP / SIGKILL), records every publish and delivery in a History, fails
only through a stall watchdog (never a wall-clock assertion) and prints the figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from eventforge.errors import TransportError
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.testing.history import History, StallWatchdog

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class _Publisher(threading.Thread):
    """Publishes sequence numbers; a publish is ``ok`` once ``flush`` confirmed it."""

    def __init__(self, transport: object, topic: str, history: History) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.topic = topic
        self.history = history
        self.stop = threading.Event()
        self.seq = 0

    def run(self) -> None:
        while not self.stop.is_set():
            seq = self.seq
            self.seq += 1
            self.history.invoke(seq)
            dropped = self.transport.stats()["publish_dropped"]  # type: ignore[attr-defined]
            try:
                self.transport.send(Message(self.topic, seq))  # type: ignore[attr-defined]
                confirmed = self.transport.flush(5.0)  # type: ignore[attr-defined]
            except TransportError:
                self.history.publish_failed(seq)
                self.stop.wait(0.02)
                continue
            if confirmed and self.transport.stats()["publish_dropped"] == dropped:  # type: ignore[attr-defined]
                self.history.published(seq)
            elif confirmed:
                self.history.publish_failed(seq, ambiguous=True)
            self.stop.wait(0.005)


def _wait_until(predicate: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """A watchdog, not a timing assertion: fail only when the system is stuck."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"stalled waiting for: {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("fault", ["pause", "kill_restart"])
def test_subscriber_detects_fault_and_resubscribes(
    fault: str, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """R-PS rows 1, 2, 7: the link failure is detected (health check for a paused server),
    every channel and pattern is subscribed again, loss happens only inside the fault window."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    options = {"health_check_interval": 0.3, "socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    subscriber = RedisTransport.from_url(server.url, **options)
    publisher = RedisTransport.from_url(server.url, **options)
    history = History()
    by_pattern: list[int] = []
    subscriber.subscribe("fault.exact", lambda m: history.delivered(m.payload))
    subscriber.subscribe("fault.*", lambda m: by_pattern.append(m.payload))
    pub = _Publisher(publisher, "fault.exact", history)
    pub.start()
    watchdog = StallWatchdog(history, stall_s=30.0)
    try:
        watchdog.wait_for(20)
        stats = subscriber.stats
        before = stats()
        history.fault_started()
        if fault == "pause":
            server.pause()
            _wait_until(
                lambda: stats()["health_check_failures"] > before["health_check_failures"],
                "the health check to notice the paused server",
            )
            history.fault_detected()
            server.resume()
        else:
            server.kill()
            _wait_until(
                lambda: stats()["disconnects"] > before["disconnects"], "the disconnect to be seen"
            )
            history.fault_detected()
            server.restart()
        resumed = time.monotonic()
        _wait_until(
            lambda: stats()["resubscribes"] > before["resubscribes"] and stats()["connected"],
            "the subscriber to resubscribe",
        )
        history.fault_ended()
        resubscribed_s = time.monotonic() - resumed
        count = history.unique_delivered()
        watchdog.wait_for(count + 20, what="deliveries after the fault")
        marker = len(by_pattern)
        _wait_until(lambda: len(by_pattern) > marker, "the pattern subscription to deliver again")
    finally:
        pub.stop.set()
        pub.join(10)
    time.sleep(0.3)  # final drain: everything confirmed has been pushed by now
    report = history.check()
    report.extra.update(
        fault=fault,
        resubscribed_s=round(resubscribed_s, 2),
        health_check_failures=subscriber.stats()["health_check_failures"],
        publish_dropped=publisher.stats()["publish_dropped"],
    )
    print(report.summary())
    subscriber.close()
    publisher.close()
    assert report.unexpected == 0
    assert report.duplicates == 0
    assert report.lost_outside_fault_window == 0, report.summary()
    assert subscriber.stats()["resubscribes"] >= 1


def test_publish_raises_while_the_server_is_down(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """R-PS row 1: publishing to a dead server raises (after the link failure is known), and the
    messages queued when the link broke are counted as dropped, never reported as sent."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    transport = RedisTransport.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        transport.send(Message("down.t", 0))
        assert transport.flush(5)
        server.kill()
        error = ""
        for n in range(1, 200):
            try:
                transport.send(Message("down.t", n))
                transport.flush(5)
            except TransportError as exc:
                error = str(exc)
                break
            time.sleep(0.01)
        assert error, "sending to a dead server never raised"
        assert "not published" in error or "cannot reach" in error
        stats = transport.stats()
        print(f"publish_dropped={stats['publish_dropped']} published={stats['published']}")
        assert stats["publish_dropped"] >= 1
        server.restart()
        _wait_until(lambda: _sends(transport), "the publisher to reconnect")
        assert transport.stats()["publisher_reconnects"] >= 1
    finally:
        transport.close()


def _sends(transport: object) -> bool:
    try:
        transport.send(Message("down.t", -1))  # type: ignore[attr-defined]
        return bool(transport.flush(2))  # type: ignore[attr-defined]
    except TransportError:
        time.sleep(0.05)
        return False


def test_idle_publisher_connection_closed_by_the_server_costs_nothing(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A publisher idle past the server's ``timeout`` PINGs before sending, reconnects, and the
    next message is delivered: nothing dropped."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory(extra_args=["--timeout", "1"])
    publisher = RedisTransport.from_url(server.url, health_check_interval=0.5)
    subscriber = RedisTransport.from_url(server.url, health_check_interval=0.5)
    got: list[object] = []
    subscriber.subscribe("idle.t", lambda m: got.append(m.payload))
    publisher.send(Message("idle.t", 1))
    publisher.flush(5)

    _wait_until(
        lambda: _closed_by_timeout(server.port), "the server to close the idle publisher connection"
    )
    publisher.send(Message("idle.t", 2))
    assert publisher.flush(10)
    _wait_until(lambda: got == [1, 2], "the message after the idle spell")
    stats = publisher.stats()
    print(
        f"publish_dropped={stats['publish_dropped']} idle_reconnects={stats['publisher_idle_reconnects']}"
    )
    assert stats["publish_dropped"] == 0
    assert stats["publisher_idle_reconnects"] >= 1
    publisher.close()
    subscriber.close()


def _closed_by_timeout(port: int) -> bool:
    import subprocess

    out = subprocess.run(
        ["redis-cli", "-p", str(port), "CLIENT", "LIST"], capture_output=True, text=True
    ).stdout
    # Left: the subscriber (pub/sub clients are exempt from the timeout) and redis-cli itself.
    return len([line for line in out.splitlines() if line.strip()]) <= 2


def test_ten_thousand_subscriptions_come_back_after_a_restart(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """R-PS row 10: 10,000 exact topics and 1,000 patterns on one connection are all subscribed
    again after the server restarted (counted on the server side), and unsubscribing leaves
    nothing behind."""
    import redis
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    transport = RedisTransport.from_url(server.url, socket_timeout=2.0)
    started = time.monotonic()
    ids = [transport.subscribe(f"many.t{n}", lambda m: None) for n in range(10_000)]
    ids += [transport.subscribe(f"many.p{n}.*", lambda m: None) for n in range(1_000)]
    subscribe_total_s = time.monotonic() - started

    def server_counts() -> tuple[int, int]:
        admin = redis.Redis(port=server.port, protocol=2)
        try:
            for client in admin.client_list():
                if int(client.get("sub", 0)) or int(client.get("psub", 0)):
                    return int(client["sub"]), int(client["psub"])
            return 0, 0
        except redis.ConnectionError:
            return -1, -1
        finally:
            admin.close()

    assert server_counts() == (10_000, 1_000)
    server.kill()
    server.restart()
    restarted = time.monotonic()
    _wait_until(lambda: server_counts() == (10_000, 1_000), "all 11,000 subscriptions to return")
    resubscribe_s = time.monotonic() - restarted
    got: list[object] = []
    probe = transport.subscribe("many.t9999", lambda m: got.append(m.payload))
    transport.send(Message("many.t9999", "back"))
    _wait_until(lambda: got == ["back"], "a message on the last topic")
    for sub_id in [*ids, probe]:
        transport.unsubscribe(sub_id)
    _wait_until(lambda: server_counts() == (0, 0), "every subscription to be removed")
    stats = transport.stats()
    print(
        f"subscriptions=11000 subscribe_total_s={subscribe_total_s:.2f} "
        f"resubscribe_s={resubscribe_s:.2f} residue={stats['redis_channels'] + stats['redis_patterns']}"
    )
    assert stats["redis_channels"] + stats["redis_patterns"] == 0
    transport.close()
