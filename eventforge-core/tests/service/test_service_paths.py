"""The path checks: a break of the user's own subscription (not the probe's companion) is seen.

Each fault test breaks the subscription a handler was declared with, behind the service's back,
and shows its state turning ``stalled`` and ``/readyz`` 503, then the service mending it (or the
handler getting unstuck) and messages flowing again, without anyone touching the service.
The times are printed for the record (``-s``), never asserted.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from eventforge.rpc import RPCClient
from eventforge.service import HealthServer, Service
from eventforge.testing import wait_until
from eventforge.testing.brokers import RedisServer
from eventforge.testing.rabbit import RabbitServer

FAST = {"probe_interval": 0.1, "probe_timeout": 0.5}


def ready_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # a connection refused or reset under load: no answer, not a verdict
        return 0


def subscription(svc: Service) -> dict[str, Any]:
    return dict(svc.health()["subscriptions"][0])


class Watch:
    """Every state and ``/readyz`` answer seen, polled on a thread, with when they changed."""

    def __init__(self, svc: Service, url: str) -> None:
        self.start = time.monotonic()
        self.states: list[str] = []
        self.codes: list[int] = []
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(svc, url), daemon=True)
        self._thread.start()

    def _run(self, svc: Service, url: str) -> None:
        while not self._stop.is_set():
            state = subscription(svc)["state"]
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            code = ready_code(url)
            self.codes.append(code)
            if code == 503:
                self.first.setdefault("503", time.monotonic() - self.start)
            elif code == 200 and "503" in self.first:
                self.first.setdefault("200 again", time.monotonic() - self.start)
            self._stop.wait(0.002)

    def stop(self, what: str) -> None:
        self._stop.set()
        self._thread.join()
        marks = ", ".join(f"/readyz {k} after {v:.2f} s" for k, v in self.first.items())
        print(f"\n{what}: states {self.states}; {marks}")


def recorded(svc: Service) -> list[str]:
    return [h["state"] for h in subscription(svc)["history"]]


def test_a_user_subscription_unsubscribed_behind_the_services_back_is_stalled_then_mended() -> None:
    svc = Service("lost-user", **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("orders.*")(lambda m: got.append(m.payload))
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 1)
        assert ready_code(server.url) == 200
        [declared] = svc._subscribers  # the handler id only the service knows
        assert declared.handler_id is not None
        watch = Watch(svc, server.url)
        assert svc.queue.unsubscribe(declared.handler_id)
        svc.queue.publish("orders.lost", 0)  # nobody receives this one
        assert wait_until(lambda: 503 in watch.codes, 10)
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("memory: user subscription unsubscribed")
        assert subscription(svc)["resubscribed"] == 1
        assert recorded(svc)[-3:] == ["stalled", "recovering", "idle"]
        assert "unsubscribed behind the service's back" in str(subscription(svc)["last_error"])
        svc.queue.publish("orders.new", 7)
        assert wait_until(lambda: got == [7])


def test_an_rpc_servers_subscription_removed_behind_the_services_back_is_stalled_then_served() -> (
    None
):
    svc = Service("lost-rpc", **FAST)  # type: ignore[arg-type]
    svc.rpc("double")(lambda x: 2 * x)
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 1)
        client = RPCClient(svc.queue, "lost-rpc", timeout=10)
        assert client.double(2) == 4
        [entry] = svc._rpc.values()
        assert entry.server is not None
        handler_id = entry.server.handler_id
        assert handler_id is not None
        watch = Watch(svc, server.url)
        assert svc.queue.unsubscribe(handler_id)
        assert wait_until(lambda: 503 in watch.codes, 10)
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("memory: RPC server's subscription unsubscribed")
        rpc = subscription(svc)
        assert (rpc["kind"], rpc["resubscribed"]) == ("rpc", 1)
        assert "unsubscribed behind the service's back" in str(rpc["last_error"])
        assert client.double(5) == 10


def test_a_stuck_threaded_handler_shows_its_backlog_is_stalled_and_back_once_it_moves() -> None:
    svc = Service("stuck", **FAST)  # type: ignore[arg-type]
    release = threading.Event()
    handled: list[Any] = []

    @svc.on("jobs", threaded=True)
    def slow(message: Any) -> None:
        release.wait(30)
        handled.append(message.payload)

    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 1)
        watch = Watch(svc, server.url)
        for n in range(4):
            svc.queue.publish("jobs", n)
        assert wait_until(lambda: subscription(svc)["backlog"] == 3)  # one is being handled
        assert wait_until(lambda: 503 in watch.codes, 10)
        sub = subscription(svc)
        assert sub["state"] == "stalled"
        assert "finished no message" in sub["last_error"]
        release.set()
        assert wait_until(lambda: handled == [0, 1, 2, 3])
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("memory: threaded handler stuck with 3 waiting")
        sub = subscription(svc)
        assert (sub["backlog"], sub["resubscribed"]) == (0, 0)
        assert sub["state"] in ("idle", "active")


def test_a_removed_named_local_inbox_is_stalled_then_made_again(tmp_path: Path) -> None:
    svc = Service("inboxed", f"local://{tmp_path}", **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("orders.*", durable="orders-inbox")(lambda m: got.append(m.payload))
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 1, 10)
        watch = Watch(svc, server.url)
        # Another process drops the named subscription with its backlog, as a sweep does.
        with sqlite3.connect(tmp_path / "eventforge.db", timeout=10) as db:
            db.execute("DELETE FROM inbox WHERE sub = 'd:orders-inbox'")
            db.execute("DELETE FROM subs WHERE id = 'd:orders-inbox'")
        assert wait_until(lambda: 503 in watch.codes, 10)
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("local://: named inbox removed")
        assert subscription(svc)["resubscribed"] == 1
        assert "stalled" in recorded(svc)
        assert "gone from the store" in str(subscription(svc)["last_error"])

        def delivers() -> bool:
            svc.queue.publish("orders.new", 9)
            return 9 in got

        assert wait_until(delivers, timeout=10, interval=0.2)


@pytest.mark.broker
def test_a_destroyed_redis_consumer_group_is_stalled_and_delivers_again(
    redis_server: RedisServer,
) -> None:
    import redis

    svc = Service("grouped", redis_server.url, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("events.*", group="workers")(lambda m: got.append(m.payload))
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 2, 10)
        [stream] = [k for k in admin.scan_iter("*:group:workers:*") if not k.endswith(b":dead")]
        watch = Watch(svc, server.url)
        admin.xgroup_destroy(stream, "workers")
        assert wait_until(lambda: 503 in watch.codes, 10)
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("redis: XGROUP DESTROY of the user's group")
        assert "stalled" in recorded(svc)

        def delivers() -> bool:
            svc.queue.publish("events.a", 1)
            return 1 in got

        assert wait_until(delivers, timeout=10, interval=0.2)
        assert subscription(svc)["state"] in ("idle", "active")
    admin.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="eventforge-amqp needs Python 3.11+")
@pytest.mark.broker
def test_a_deleted_amqp_queue_of_the_user_subscription_is_stalled_then_delivers(
    rabbit_server: RabbitServer,
) -> None:
    pytest.importorskip("eventforge_amqp")
    svc = Service("rabbit-user", rabbit_server.url, **FAST)  # type: ignore[arg-type]
    got: list[Any] = []
    svc.on("events.*", group="billing")(lambda m: got.append(m.payload))
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: subscription(svc)["probes"]["seen"] >= 2, 20)
        names = [
            line.split("\t")[0]
            for line in rabbit_server.ctl("list_queues", "name", "--quiet").splitlines()
            if "billing" in line
        ]
        assert len(names) == 1, names
        watch = Watch(svc, server.url)
        rabbit_server.ctl("delete_queue", names[0])
        assert wait_until(lambda: 503 in watch.codes, 20)
        assert wait_until(lambda: watch.codes[-1:] == [200], 20)
        watch.stop("AMQP: the user's queue deleted")
        assert "stalled" in recorded(svc)
        assert "dropped it" in str(subscription(svc)["last_error"])

        def delivers() -> bool:
            svc.queue.publish("events.x", 1)
            return 1 in got

        assert wait_until(delivers, timeout=20, interval=0.2)


@pytest.mark.broker
def test_a_destroyed_redis_work_queue_group_stalls_its_consumer_until_it_consumes_again(
    redis_server: RedisServer,
) -> None:
    import redis
    from eventforge.workqueue import WorkQueue

    svc = Service("wq-lost", redis_server.url, **FAST)  # type: ignore[arg-type]
    done: list[Any] = []
    svc.consumer("chores")(lambda m: done.append(m.payload))
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    with svc, HealthServer(svc.health) as server:
        work = WorkQueue("chores", svc.queue.transport)
        work.put(1)
        assert wait_until(lambda: done == [1], 10)
        watch = Watch(svc, server.url)
        admin.xgroup_destroy("eventforge:wq:chores", "eventforge-workers")
        assert wait_until(lambda: 503 in watch.codes, 10)
        assert wait_until(lambda: watch.codes[-1:] == [200], 10)
        watch.stop("redis: XGROUP DESTROY of a work queue's group")
        assert "stalled" in recorded(svc)
        work.put(2)
        assert wait_until(lambda: done == [1, 2], 10)
        work.close()
    admin.close()
