"""End-to-end probes: a subscription that stops delivering is seen as stalled and comes back.

Each fault test breaks one subscription's delivery path without restarting the process, and
shows the service's state and ``/readyz`` turning and recovering on their own. The figures
(time to detect, time to recover) are printed for the record (``-s``), never asserted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.service import HealthServer, HealthState, Service
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer, RedisServer
from eventforge.testing.rabbit import RabbitServer
from eventforge.workqueue import WorkQueue

FAST = {"probe_interval": 0.1, "probe_timeout": 0.5}


def ready_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def state_of(svc: Service, index: int = 0) -> str:
    return str(svc.health()["subscriptions"][index]["state"])


class Timeline:
    """When the state left ``idle``/``active``, and when it came back."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic() - self.start

    def report(self, what: str) -> None:
        print(f"\n{what}: " + ", ".join(f"{k} after {v:.2f} s" for k, v in self.marks.items()))


def test_probes_go_out_and_come_back_on_a_healthy_subscription() -> None:
    svc = Service("healthy", **FAST)  # type: ignore[arg-type]
    svc.on("t")(lambda m: None)
    with svc:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 3)
        probes = svc.health()["subscriptions"][0]["probes"]
        assert probes["lost"] == 0
        assert probes["stalls"] == 0
        assert state_of(svc) == "idle"


def test_probe_traffic_never_reaches_the_handlers() -> None:
    svc = Service("quiet", **FAST)  # type: ignore[arg-type]
    seen: list[Message] = []
    svc.on("**")(seen.append)
    with svc:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 3)
    assert seen == [] or all(not m.topic.startswith("_eventforge.probe") for m in seen)


class Watch:
    """Record every state and /readyz answer seen, on a thread, until stopped."""

    def __init__(self, svc: Service, url: str | None = None) -> None:
        self.states: list[str] = []
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(svc, url), daemon=True)
        self._thread.start()

    def _run(self, svc: Service, url: str | None) -> None:
        while not self._stop.is_set():
            state = state_of(svc)
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            if url is not None:
                self.codes.append(ready_code(url))
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_lost_subscription_is_stalled_then_reestablished_and_delivers_again() -> None:
    svc = Service("lost", **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("orders.*")(lambda m: got.append(m.payload))
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 1)
        assert ready_code(server.url) == 200
        prober = svc.prober
        assert prober is not None
        # The delivery path disappears behind the service's back (the probe's companion
        # subscription is what a broker would have dropped).
        probe = prober.probes[0]
        assert probe.handler_id is not None
        watch = Watch(svc, server.url)
        timeline = Timeline()
        svc.queue.unsubscribe(probe.handler_id)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["resubscribed"] == 1, 10)
        timeline.mark("re-established")
        assert wait_until(lambda: state_of(svc) == "idle" and ready_code(server.url) == 200, 10)
        timeline.mark("ready")
        watch.stop()
        timeline.report(f"lost subscription (states seen: {watch.states})")
        sub = svc.health()["subscriptions"][0]
        recorded = [h["state"] for h in sub["history"]]
        assert recorded[-3:] == ["stalled", "recovering", "idle"]
        assert sub["probes"]["stalls"] == 1
        svc.queue.publish("orders.new", 7)
        assert wait_until(lambda: got == [7])


def test_a_stalled_rpc_server_is_served_again() -> None:
    svc = Service("calc", **FAST)  # type: ignore[arg-type]

    @svc.rpc()
    def double(x: int) -> int:
        return 2 * x

    with svc:
        prober = svc.prober
        assert prober is not None
        assert wait_until(lambda: prober.probes[0].seen >= 1)
        assert prober.probes[0].handler_id is not None
        svc.queue.unsubscribe(prober.probes[0].handler_id)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["resubscribed"] == 1, 10)
        assert wait_until(lambda: state_of(svc) == "idle", timeout=10)
        from eventforge import RPCClient

        assert RPCClient(svc.queue, service_name="calc").call("double", 21) == 42


def test_probes_can_be_switched_off() -> None:
    svc = Service("off", probe_interval=None)
    svc.on("t")(lambda m: None)
    with svc:
        assert svc.prober is None
        assert svc.health()["subscriptions"][0]["probes"] is None


def test_nonsense_probe_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="probe_interval"):
        Service("x", probe_interval=0)


@pytest.mark.broker
def test_redis_paused_turns_readyz_503_and_back_without_touching_the_process(
    redis_server: RedisServer,
) -> None:
    import redis

    svc = Service("paused", redis_server.url, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("events.*")(lambda m: got.append(m.payload))
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 10)
        timeline = Timeline()
        watch = Watch(svc, server.url)
        admin.execute_command("CLIENT", "PAUSE", "2000", "ALL")
        assert wait_until(lambda: 503 in watch.codes, timeout=10)
        timeline.mark("unready")
        assert wait_until(lambda: watch.codes[-1:] == [200], timeout=20)
        timeline.mark("ready again")
        watch.stop()
        timeline.report(f"redis CLIENT PAUSE 2 s (states seen: {watch.states})")
        assert "stalled" in watch.states
        svc.queue.publish("events.a", 1)
        assert wait_until(lambda: got == [1])
    admin.close()


@pytest.mark.broker
def test_redis_subscriber_connection_killed_recovers_and_delivers(
    redis_server: RedisServer,
) -> None:
    import redis

    svc = Service("killed", redis_server.url, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("events.*")(lambda m: got.append(m.payload))
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    states: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            states.add(state_of(svc))
            time.sleep(0.01)

    with svc:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 10)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        timeline = Timeline()
        killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1

        def delivers() -> bool:
            svc.queue.publish("events.b", 2)
            return 2 in got

        assert wait_until(delivers, timeout=20, interval=0.1)
        timeline.mark("delivering again")
        assert wait_until(lambda: state_of(svc) in ("idle", "active"), timeout=10)
        timeline.report(f"redis CLIENT KILL TYPE pubsub (states seen: {sorted(states)})")
        stop.set()
        watcher.join()
    admin.close()


def test_tcp_server_restart_is_seen_and_recovered() -> None:
    pytest.importorskip("eventforge_tcp")
    from eventforge.transports.tcp import TCPClientTransport, TCPServerTransport

    server = TCPServerTransport("127.0.0.1", 0).start()
    port = server.port
    client = TCPClientTransport(
        "127.0.0.1", port, reconnect_delay=0.02, reconnect_max_delay=0.2
    ).connect()
    svc = Service("tcp-side", client, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("jobs.*")(lambda m: got.append(m.payload))
    try:
        with svc, HealthServer(svc.health) as health:
            assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2)
            timeline = Timeline()
            server.close()
            assert wait_until(lambda: ready_code(health.url) == 503, timeout=10)
            timeline.mark(f"unready ({state_of(svc)})")
            server = TCPServerTransport("127.0.0.1", port).start()
            assert wait_until(lambda: ready_code(health.url) == 200, timeout=20)
            timeline.mark("ready again")
            timeline.report("TCP server restart")

            def delivers() -> bool:
                svc.queue.publish("jobs.x", 3)
                return 3 in got

            assert wait_until(delivers, timeout=10, interval=0.1)
    finally:
        server.close()


def test_tracker_state_counts_an_overdue_probe_as_stalled_even_while_sending_blocks() -> None:
    svc = Service("blocked", **FAST)  # type: ignore[arg-type]
    svc.on("t")(lambda m: None)
    [tracker] = svc.trackers()
    tracker.set(HealthState.IDLE)
    tracker.overdue = lambda now: True
    assert tracker.state(idle_after=60, link_up=True) is HealthState.STALLED
    tracker.overdue = lambda now: False
    assert tracker.state(idle_after=60, link_up=True) is HealthState.IDLE


@pytest.mark.broker
def test_nats_server_frozen_turns_readyz_503_and_back(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    server = nats_server_factory()
    svc = Service("frozen", server.url, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("events.*")(lambda m: got.append(m.payload))
    assert server.process is not None
    with svc, HealthServer(svc.health) as health:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 10)
        timeline = Timeline()
        watch = Watch(svc, health.url)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: 503 in watch.codes, timeout=10)
            timeline.mark("unready")
        finally:
            time.sleep(1.0)
            os.kill(server.process.pid, signal.SIGCONT)
        assert wait_until(lambda: watch.codes[-1:] == [200], timeout=30)
        timeline.mark("ready again")
        watch.stop()
        timeline.report(f"nats-server SIGSTOP ~1.5 s (states seen: {watch.states})")

        def delivers() -> bool:
            svc.queue.publish("events.n", 5)
            return 5 in got

        assert wait_until(delivers, timeout=10, interval=0.1)


@pytest.mark.broker
def test_a_deleted_jetstream_consumer_is_stalled_then_recreated_and_consumes_again(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    """The JetStream consumer vanishes while the connection stays up: fetches wait silently."""
    import asyncio

    import nats

    server = nats_server_factory()
    svc = Service("js", server.url, **FAST)  # type: ignore[arg-type]
    done: list[Any] = []
    svc.consumer("jobs")(lambda m: done.append(m.payload))

    async def delete_consumer() -> None:
        client = await nats.connect(server.url)
        await client.jetstream().delete_consumer("EF_WQ_jobs", "eventforge")
        await client.close()

    with svc, HealthServer(svc.health) as health:
        work = WorkQueue("jobs", svc.queue.transport)
        work.put(1)
        assert wait_until(lambda: done == [1])
        timeline = Timeline()
        watch = Watch(svc, health.url)
        asyncio.run(delete_consumer())
        assert wait_until(lambda: svc.health()["subscriptions"][0]["resubscribed"] == 1, 30)
        timeline.mark("re-established")
        work.put(2)
        assert wait_until(lambda: done == [1, 2], timeout=30)
        timeline.mark("consuming again")
        assert wait_until(lambda: ready_code(health.url) == 200, timeout=10)
        watch.stop()
        timeline.report(f"JetStream consumer deleted (states seen: {watch.states})")
        recorded = [h["state"] for h in svc.health()["subscriptions"][0]["history"]]
        assert recorded[-3:] == ["stalled", "recovering", "idle"]
        assert 503 in watch.codes
        work.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="eventforge-amqp needs Python 3.11+")
@pytest.mark.broker
@pytest.mark.slow
def test_an_amqp_resource_alarm_turns_readyz_503_and_back(
    rabbit_server_factory: Callable[..., RabbitServer],
) -> None:
    """The broker blocks publishers (memory alarm): probes cannot go out, so nothing arrives."""
    pytest.importorskip("eventforge_amqp")
    node = rabbit_server_factory()
    svc = Service("alarmed", node.url, probe_interval=0.2, probe_timeout=1.0)
    svc.on("events.*")(lambda m: None)
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 20)
        timeline = Timeline()
        watch = Watch(svc, server.url)
        node.ctl("set_vm_memory_high_watermark", "0")
        try:
            assert wait_until(lambda: 503 in watch.codes, timeout=30)
            timeline.mark("unready")
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
        assert wait_until(lambda: watch.codes[-1:] == [200], timeout=60)
        timeline.mark("ready again")
        watch.stop()
        timeline.report(f"AMQP memory alarm (states seen: {watch.states})")


def test_local_doorbells_removed_by_another_process_leave_delivery_and_health_intact(
    tmp_path: Path,
) -> None:
    """The bells/ directory of a local:// store is wiped (say, by a careless cleanup job):
    publishers cannot wake this process; only the slow safety-net check still delivers."""
    import shutil

    svc = Service("belled", f"local://{tmp_path}", **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("orders.*")(lambda m: got.append(m.payload))
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 10)
        timeline = Timeline()
        watch = Watch(svc, server.url)
        shutil.rmtree(tmp_path / "bells")

        def delivers() -> bool:
            svc.queue.publish("orders.new", 9)
            return 9 in got

        assert wait_until(delivers, timeout=30, interval=0.2)
        timeline.mark("delivering again")
        assert wait_until(lambda: ready_code(server.url) == 200, timeout=30)
        timeline.mark("ready")
        watch.stop()
        timeline.report(f"local:// doorbells removed (states seen: {watch.states})")
