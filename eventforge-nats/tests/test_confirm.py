"""Publishing into a stalled link (RELIABILITY row 28): what a dead connection ate is counted.

The server is paused (SIGSTOP) while a publisher runs. Until the ping timeout declares the
connection stale, ``publish`` keeps succeeding: the messages go into socket buffers that die
with the connection. Each of them must be counted in ``publish_possibly_lost``; nothing may
vanish with every counter at 0.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.testing.waiting import wait_until
from eventforge_nats.transport import NatsTransport

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OPTIONS = {
    "reconnect_time_wait": 0.1,
    "connect_timeout": 1.0,
    "ping_interval": 0.5,
    "max_outstanding_pings": 2,
}


class Publisher(threading.Thread):
    """Publishes consecutive sequence numbers, about one per millisecond, until stopped."""

    def __init__(self, transport: NatsTransport) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.published: list[int] = []
        self.failed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                self.transport.send(Message("stall.seq", seq))
                self.published.append(seq)
            except Exception:
                self.failed.append(seq)  # refused loudly: not a silent loss
            time.sleep(0.001)


def settled(received: set[int], quiet: float = 1.0) -> bool:
    """Wait until no new delivery arrived for ``quiet`` seconds (a stall watchdog caps it)."""
    last, since = len(received), time.monotonic()
    deadline = since + 30.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if len(received) != last:
            last, since = len(received), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def test_messages_written_into_a_stalled_link_are_counted(nats_server_factory: Any) -> None:
    server: NatsServer = nats_server_factory(jetstream=False)
    # The subscriber's own link outlives the pause (default pings): what it misses was lost on
    # the publisher's side, not published while it was away reconnecting.
    sub = NatsTransport(server.url, reconnect_time_wait=0.1)
    pub = NatsTransport(server.url, **OPTIONS)
    received: set[int] = set()
    sub.subscribe("stall.seq", lambda m: received.add(m.payload))
    publisher = Publisher(pub)
    publisher.start()
    try:
        assert wait_until(lambda: len(received) >= 300, 20.0), "nothing flows before the fault"
        # A healthy link confirms what it carries: nothing is counted as possibly lost.
        assert pub.stats()["publish_possibly_lost"] == 0
        server.pause()
        try:
            assert wait_until(lambda: pub.stats()["state"] != "connected", 30.0), (
                "the stalled link was never detected"
            )
            time.sleep(0.5)
        finally:
            server.resume()
        assert wait_until(lambda: pub.stats()["state"] == "connected", 30.0)
        time.sleep(0.5)  # more traffic on the healed links
    finally:
        publisher.stop.set()
        publisher.join()
    pub.flush()
    assert settled(received), "deliveries never settled"
    stats = pub.stats()
    lost = set(publisher.published) - received
    counted = stats["publish_possibly_lost"]
    print(
        f"N-C stalled link: published={len(publisher.published)} "
        f"refused={len(publisher.failed)} lost={len(lost)} possibly_lost_counted={counted} "
        f"publish_errors={stats['publish_errors']}"
    )
    assert counted > 0, "messages written into the stalled link were not counted"
    assert counted >= len(lost), f"{len(lost) - counted} messages vanished without a count"
    pub.close()
    sub.close()


def test_what_flush_confirmed_is_never_counted_as_possibly_lost(nats_server_factory: Any) -> None:
    """``flush`` is a barrier: once it returns, the server has read every message sent before
    it, so a connection that dies right after has eaten none of them."""
    server: NatsServer = nats_server_factory(jetstream=False)
    pub = NatsTransport(server.url, **OPTIONS)
    for seq in range(5000):
        pub.send(Message("flushed.seq", seq))
    pub.flush(10.0)
    server.kill()
    assert wait_until(lambda: pub.stats()["state"] != "connected", 30.0)
    assert pub.stats()["publish_possibly_lost"] == 0
    pub.close()
