"""``eventforge run``: one process or a supervised pool, health endpoints, graceful drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from eventforge import MessageQueue, connect
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer, RedisServer
from eventforge.workqueue import WorkQueue

SERVICE = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from eventforge.service import Service

    OUT = Path(os.environ["EF_TEST_OUT"])
    svc = Service("runner", drain_timeout=5)

    @svc.on("greet")
    def greet(message):
        with open(OUT / f"greet-{os.getpid()}", "a") as f:
            f.write(f"{message.payload}\\n")

    @svc.consumer("jobs")
    def job(message):
        with open(OUT / "jobs", "a") as f:
            f.write(f"{os.getpid()} {message.payload}\\n")

    @svc.rpc()
    def add(a, b):
        return a + b

    @svc.on_shutdown
    def bye():
        with open(OUT / f"shutdown-{os.getpid()}", "w") as f:
            f.write("drained\\n")
    """
)


class Lines:
    """Collect a process's stdout lines on a thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.strip())

    def starting(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]


def code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def fetch(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "runnerapp.py").write_text(SERVICE)
    (tmp_path / "out").mkdir()
    return tmp_path


def start(app_dir: Path, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    env = {**os.environ, "EF_TEST_OUT": str(app_dir / "out"), "PYTHONUNBUFFERED": "1"}
    env.pop("EVENTFORGE_TRANSPORT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventforge.cli", "run", "runnerapp:svc", *args],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


@pytest.fixture
def stop_all() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def word(line: str, key: str) -> str:
    return next(w.partition("=")[2] for w in line.split() if w.startswith(key + "="))


def test_one_worker_serves_health_and_drains_on_sigterm(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    proc, out = start(app_dir, "--health-port", "0", "--log-format", "json")
    stop_all.append(proc)
    assert wait_until(lambda: out.starting("eventforge service ready"), timeout=30)
    health = word(out.starting("eventforge service ready")[0], "health")
    status, report = fetch(health + "/health")
    assert status == 200
    assert report["status"] == "ready"
    kinds = sorted(s["kind"] for s in report["subscriptions"])
    assert kinds == ["consumer", "rpc", "subscription"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert (app_dir / "out" / f"shutdown-{proc.pid}").read_text() == "drained\n"
    assert proc.stderr is not None
    logged = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert any(e["message"].startswith("service 'runner' stopped") for e in logged)


def test_a_bad_log_level_is_a_clear_error_not_a_traceback(app_dir: Path) -> None:
    proc, _ = start(app_dir, "--log-level", "LOUD")
    assert proc.wait(timeout=30) == 2
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "unknown log level 'LOUD'" in err
    assert "Traceback" not in err


def test_a_target_that_is_not_a_service_is_refused(app_dir: Path) -> None:
    env = {**os.environ, "EF_TEST_OUT": str(app_dir / "out")}
    done = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "run", "runnerapp:OUT"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "is not a Service" in done.stderr


def _pool(
    app_dir: Path, url: str, stop_all: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], Lines, str]:
    proc, out = start(app_dir, "--workers", "2", "--transport", url, "--health-port", "0")
    stop_all.append(proc)
    assert wait_until(lambda: len(out.starting("eventforge service ready")) == 2, timeout=60)
    pool_health = word(out.starting("eventforge pool")[0], "health")
    assert wait_until(lambda: code(pool_health + "/readyz") == 200, timeout=30)
    return proc, out, pool_health


def _run_pool(app_dir: Path, url: str, stop_all: list[subprocess.Popen[str]]) -> None:
    proc, _out, pool_health = _pool(app_dir, url, stop_all)
    status, report = fetch(pool_health + "/health")
    assert status == 200
    assert [w["state"] for w in report["workers"]] == ["running", "running"]
    assert len(report["subscriptions"]) == 6  # three per worker
    with urllib.request.urlopen(pool_health + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'eventforge_subscription_deliveries_total{service="runner"' in metrics
    assert 'worker="0"' in metrics
    assert 'worker="1"' in metrics

    transport = connect(url)
    work = WorkQueue("jobs", transport)
    for n in range(20):
        work.put(n)
    jobs = app_dir / "out" / "jobs"
    assert wait_until(lambda: jobs.exists() and len(jobs.read_text().splitlines()) == 20, 30)
    handled = sorted(int(line.split()[1]) for line in jobs.read_text().splitlines())
    assert handled == list(range(20))  # each item once across the two workers
    work.close()
    queue = MessageQueue(transport=transport)
    queue.publish("greet", "hello")
    greeted = lambda: list((app_dir / "out").glob("greet-*"))  # noqa: E731
    assert wait_until(lambda: len(greeted()) == 2)  # fan-out reaches both workers

    victim = report["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: code(pool_health + "/readyz") == 503, timeout=10)
    assert wait_until(lambda: code(pool_health + "/readyz") == 200, timeout=60)
    report = fetch(pool_health + "/health")[1]
    assert report["workers"][0]["restarts"] == 1
    assert report["workers"][0]["pid"] != victim
    queue.close()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    pids = [w["pid"] for w in report["workers"]]
    assert all((app_dir / "out" / f"shutdown-{pid}").exists() for pid in pids)


@pytest.mark.broker
@pytest.mark.slow
def test_two_workers_on_redis_share_work_restart_and_drain(
    app_dir: Path, redis_server: RedisServer, stop_all: list[subprocess.Popen[str]]
) -> None:
    _run_pool(app_dir, redis_server.url, stop_all)


@pytest.mark.broker
@pytest.mark.slow
def test_two_workers_on_nats_share_work_restart_and_drain(
    app_dir: Path, nats_server: NatsServer, stop_all: list[subprocess.Popen[str]]
) -> None:
    _run_pool(app_dir, nats_server.url, stop_all)


def test_status_prints_the_health_as_a_table_and_exits_by_readiness(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    proc, out = start(app_dir, "--health-port", "0")
    stop_all.append(proc)
    assert wait_until(lambda: out.starting("eventforge service ready"), timeout=30)
    health = word(out.starting("eventforge service ready")[0], "health")
    done = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "status", health],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "runner: ready"
    assert lines[1].split()[:5] == ["WORKER", "KIND", "HANDLER", "TARGET", "STATE"]
    assert {line.split()[1] for line in lines[2:]} == {"subscription", "consumer", "rpc"}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    gone = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "status", health],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 2
    assert "cannot reach" in gone.stderr


def test_the_worker_command_runs_a_service_target(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    env = {**os.environ, "EF_TEST_OUT": str(app_dir / "out"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventforge.worker", "runnerapp:svc", "--health-port", "0"],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop_all.append(proc)
    assert proc.stdout is not None
    out = Lines(proc.stdout)
    assert wait_until(lambda: out.starting("eventforge service ready name=runner"), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_reload_restarts_the_worker_when_a_source_file_changes(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    pytest.importorskip("watchfiles")
    proc, out = start(app_dir, "--reload")
    stop_all.append(proc)
    assert wait_until(lambda: len(out.starting("eventforge service ready")) == 1, timeout=30)
    first = word(out.starting("eventforge service ready")[0], "pid")
    source = app_dir / "runnerapp.py"
    source.write_text(source.read_text() + "\n# changed\n")
    assert wait_until(lambda: len(out.starting("eventforge service ready")) == 2, timeout=30)
    second = word(out.starting("eventforge service ready")[1], "pid")
    assert second != first
    assert (app_dir / "out" / f"shutdown-{first}").exists()  # the old worker drained
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_workers_stop_when_their_pool_is_killed(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    proc, out = start(app_dir, "--workers", "2", "--health-port", "0")
    stop_all.append(proc)
    assert wait_until(lambda: len(out.starting("eventforge service ready")) == 2, timeout=60)
    pids = [int(word(line, "pid")) for line in out.starting("eventforge service ready")]
    proc.kill()  # SIGKILL: the pool cannot pass anything on
    proc.wait(10)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for init counts as gone
            return stat.read().split()[2] == "Z"

    assert wait_until(lambda: all(gone(pid) for pid in pids), timeout=30)
    assert all((app_dir / "out" / f"shutdown-{pid}").exists() for pid in pids)  # they drained


DRAINED = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from eventforge.service import Service

    OUT = Path(os.environ["EF_TEST_OUT"])
    svc = Service("drainer", drain_timeout=20, probe_interval=None)

    @svc.on("slow", threaded=True)
    def slow(message):
        (OUT / "started").touch()
        time.sleep(0.2)
        with open(OUT / "handled", "a") as f:
            f.write(f"{message.payload}\\n")
    """
)


def test_sigint_lets_a_threaded_subscriber_finish_its_backlog_before_exiting(
    app_dir: Path, stop_all: list[subprocess.Popen[str]]
) -> None:
    (app_dir / "drainapp.py").write_text(DRAINED)
    store = f"local://{app_dir / 'store'}"
    env = {**os.environ, "EF_TEST_OUT": str(app_dir / "out"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventforge.cli", "run", "drainapp:svc", "--transport", store],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop_all.append(proc)
    assert proc.stdout is not None
    out = Lines(proc.stdout)
    assert wait_until(lambda: out.starting("eventforge service ready"), timeout=30)
    queue = MessageQueue(store)
    for n in range(3):
        queue.publish("slow", n)
    queue.close()
    assert wait_until(lambda: (app_dir / "out" / "started").exists(), timeout=30)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while two messages still wait for the handler
    assert proc.wait(timeout=30) == 0
    assert (app_dir / "out" / "handled").read_text().split() == ["0", "1", "2"]
