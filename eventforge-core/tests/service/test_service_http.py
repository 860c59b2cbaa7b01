"""The health endpoints: /livez, /readyz, /health, /metrics and the status page."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.service import HealthServer, Service
from eventforge.service.health import Tracker
from eventforge.service.http import render_page
from eventforge.service.run import status_table
from eventforge.testing import wait_until


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def served() -> Any:
    svc = Service("web")

    def on_order(message: Message) -> None:
        pass

    def work(message: Message) -> None:
        pass

    svc.on("orders.*")(on_order)
    svc.consumer("jobs")(work)
    svc.start()
    server = HealthServer(svc.health)
    yield svc, server
    server.close()
    svc.stop()


def test_the_server_listens_on_loopback_by_default(served: Any) -> None:
    _, server = served
    host, port = server.address
    assert host == "127.0.0.1"
    assert port > 0
    assert server.url == f"http://127.0.0.1:{port}"


def test_livez_and_readyz_answer_200_while_everything_runs(served: Any) -> None:
    _, server = served
    assert get(server.url + "/livez")[:1] == (200,)
    status, _, body = get(server.url + "/readyz")
    assert (status, body) == (200, "ready\n")


def test_readyz_answers_503_with_the_reason_when_a_consumer_stalls(served: Any) -> None:
    svc, server = served
    svc.consumer_of("jobs").stop()
    status, _, body = get(server.url + "/readyz")
    assert status == 503
    assert "consumer" in body
    assert "'jobs' is stalled" in body
    status, ctype, text = get(server.url + "/health")
    assert status == 503
    assert ctype == "application/json"
    assert json.loads(text)["status"] == "unready"


def test_health_lists_every_subscription_with_state_counters_and_backlog(served: Any) -> None:
    svc, server = served
    svc.queue.publish("orders.new", 1)
    assert wait_until(lambda: svc.health()["subscriptions"][0]["delivered"] == 1)
    status, ctype, text = get(server.url + "/health")
    report = json.loads(text)
    assert (status, ctype) == (200, "application/json")
    subs = {s["target"]: s for s in report["subscriptions"]}
    assert subs["orders.*"]["state"] == "active"
    assert subs["orders.*"]["delivered"] == 1
    assert subs["jobs"]["kind"] == "consumer"
    assert subs["jobs"]["backlog"] == 0
    assert report["service"] == "web"
    assert report["live"] is True


def test_livez_answers_503_once_the_service_stopped(served: Any) -> None:
    svc, server = served
    svc.stop()
    assert get(server.url + "/livez")[0] == 503
    assert get(server.url + "/readyz")[0] == 503


def test_metrics_serve_prometheus_text(served: Any) -> None:
    pytest.importorskip("prometheus_client")
    _, server = served
    status, ctype, body = get(server.url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    assert "# HELP" in body
    assert "process_" in body or "python_" in body  # the client's default registry follows


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text body, parsed by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_metrics_export_each_subscriptions_state_backlog_deliveries_errors_and_stalls() -> None:
    svc = Service("shop", probe_interval=0.1, probe_timeout=0.5)

    @svc.on("orders.*")
    def on_order(message: Message) -> None:
        if message.payload == "bad":
            raise ValueError("bad order")

    @svc.consumer("jobs")
    def work(message: Message) -> None:
        pass

    with svc, HealthServer(svc.health) as server:
        svc.queue.publish("orders.a", "good")
        svc.queue.publish("orders.b", "bad")
        declared = svc._subscribers[0]  # the handler id only the service knows
        assert declared.handler_id is not None
        svc.queue.unsubscribe(declared.handler_id)  # stalled, then subscribed again
        mended = lambda: svc.health()["subscriptions"][0]  # noqa: E731
        assert wait_until(lambda: (mended()["resubscribed"], mended()["state"]) == (1, "active"))
        status, _, body = get(server.url + "/metrics")
    assert status == 200
    got = samples(body)
    order = {("service", "shop"), ("kind", "subscription"), ("target", "orders.*")}
    order |= {("subscription", on_order.__qualname__)}
    jobs = {("service", "shop"), ("kind", "consumer"), ("target", "jobs")}
    jobs |= {("subscription", work.__qualname__)}

    def value(name: str, labels: set[tuple[str, str]]) -> float:
        return got[(name, frozenset(labels))]

    assert value("eventforge_subscription_deliveries_total", order) == 2
    assert value("eventforge_subscription_errors_total", order) == 1
    assert value("eventforge_subscription_stalls_total", order) == 1
    assert value("eventforge_subscription_resubscribed_total", order) == 1
    assert value("eventforge_subscription_state", order | {("state", "active")}) == 1
    assert value("eventforge_subscription_state", order | {("state", "stalled")}) == 0
    assert value("eventforge_subscription_backlog", jobs) == 0
    assert value("eventforge_subscription_stalls_total", jobs) == 0
    assert value("eventforge_service_ready", {("service", "shop")}) == 1
    assert value("eventforge_subscription_last_delivery_timestamp_seconds", order) > 0


def test_an_unknown_path_is_404_naming_the_endpoints(served: Any) -> None:
    _, server = served
    status, _, body = get(server.url + "/nope")
    assert status == 404
    assert "/readyz" in body


def test_the_status_page_shows_each_subscription_and_refreshes(served: Any) -> None:
    _, server = served
    status, ctype, page = get(server.url + "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert "http-equiv='refresh'" in page
    assert "orders.*" in page
    assert "jobs" in page
    assert ">idle<" in page


def test_the_status_page_escapes_what_it_shows() -> None:
    page = render_page(
        {
            "service": "<svc>",
            "status": "unready",
            "reasons": ["<script>"],
            "subscriptions": [{"name": "<b>", "target": "a&b", "state": "failed"}],
        }
    )
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "a&amp;b" in page
    assert "&lt;svc&gt;" in page


def test_each_subscription_reports_its_delivery_rate_on_the_health_and_the_page() -> None:
    tracker = Tracker("on_order", "subscription", "orders.*")
    tracker.sample(100.0)
    for _ in range(30):
        tracker.delivered_now()
    tracker.sample(100.5)  # under the window: no rate yet
    assert tracker.rate == 0.0
    tracker.sample(102.0)  # 30 deliveries over 2 s
    assert tracker.rate == 15.0
    tracker.sample(103.0)  # none since: the rate falls to 0
    assert tracker.rate == 0.0
    live = Tracker("on_order", "subscription", "orders.*")
    live.sample(time.time() - 2.0)
    for _ in range(10):
        live.delivered_now()
    snapshot = live.snapshot(idle_after=60, link_up=True)  # samples now: 10 over 2 s and a bit
    assert 4.0 <= snapshot["rate"] <= 5.0
    shown = f"{snapshot['rate']:.1f}"
    page = render_page({"service": "s", "status": "ready", "subscriptions": [snapshot]})
    assert "<th>per second</th>" in page
    assert f"<td>{shown}</td>" in page
    table = status_table({"service": "s", "status": "ready", "subscriptions": [snapshot]})
    assert "PER S" in table
    assert f" {shown} " in table


def test_a_port_in_use_is_refused_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="choose another --health-port"):
            HealthServer(dict, port=port)


def test_a_failing_report_is_a_500_not_a_dead_server() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    with HealthServer(broken) as server:
        status, _, body = get(server.url + "/health")
        assert status == 500
        assert "boom" in body
        assert get(server.url + "/health")[0] == 500


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("EVENTFORGE_REQUIRE_BROKERS") == "1":
        pytest.fail("no headless Chromium on PATH (apt-get install chromium)")
    pytest.skip("no headless Chromium on PATH (apt-get install chromium)")


def test_the_status_page_renders_in_a_real_browser(served: Any, tmp_path: Any) -> None:
    browser = _chromium()
    svc, server = served
    svc.queue.publish("orders.paid", 1)
    assert wait_until(lambda: svc.health()["subscriptions"][0]["delivered"] == 1)
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path}",
            "--dump-dom",
            server.url + "/",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert '<table id="subscriptions">' in dom
    assert "orders.*" in dom
    assert "jobs" in dom
    assert '<b style="color:#1a7f37" class="state">active</b>' in dom
    assert 'id="status">status: <b>ready</b>' in dom
