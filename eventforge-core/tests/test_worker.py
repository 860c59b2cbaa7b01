"""python -m eventforge.worker: the seed's contract, clear errors, sharing calls, graceful stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge import MessageQueue, RPCClient
from eventforge.execution import ExecutionMode, Executor
from eventforge.testing import wait_until
from eventforge.transport._loop import background_loop
from eventforge.transports.memory import MemoryTransport
from eventforge.worker import READY_PREFIX, Worker

pytest.importorskip("eventforge_tcp")

from eventforge.transports.tcp import TCPClientTransport, TCPServerTransport

HANDLERS_PY = """
import os, time

def compute(x):
    return x * 2

def whoami():
    return os.getpid()

def slow(seconds, marker=None):
    if marker:
        open(marker, "w").close()
    time.sleep(seconds)
    return "finished"

HANDLERS = {"compute": compute, "whoami": whoami, "slow": slow}
SERVICE_NAME = "math"
"""


class WorkerProcess:
    """A worker subprocess; waits for its readiness line and parses its URL."""

    def __init__(self, cwd: Path, *args: str, module: str = "eventforge.worker") -> None:
        cmd = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.proc.kill()
            raise AssertionError(f"no readiness line: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.fields = dict(part.split("=", 1) for part in line.split()[3:])
        tail = self.fields["url"].rsplit(":", 1)[-1]
        self.port = int(tail) if tail.isdigit() else 0

    def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Path:
    (tmp_path / "handlers.py").write_text(HANDLERS_PY)
    return tmp_path


@pytest.fixture
def worker(handlers_dir: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(handlers_dir, "--import", "handlers", "--service", "math", "--port", "0")
    yield w
    w.kill()


def _client(port: int, service: str = "math") -> tuple[MessageQueue, RPCClient]:
    queue = MessageQueue(transport=TCPClientTransport("127.0.0.1", port).connect())
    return queue, RPCClient(queue, service_name=service, timeout=10)


def test_seed_command_serves_handlers(worker: WorkerProcess) -> None:
    """`python -m eventforge.worker --import handlers --service math --port N` answers calls."""
    assert worker.fields["service"] == "math"
    assert worker.fields["methods"] == "compute,slow,whoami"
    queue, client = _client(worker.port)
    try:
        assert client.call("compute", 21) == 42
        assert client.compute(5) == 10
        assert client.call("whoami") == worker.proc.pid
    finally:
        queue.close()
    code, out = worker.terminate()
    assert code == 0
    assert "drained=True" in out


def test_sigterm_finishes_calls_in_flight(worker: WorkerProcess, tmp_path: Path) -> None:
    """SIGTERM during a call: the call completes and its reply arrives; exit status 0."""
    queue, client = _client(worker.port)
    result: list[object] = []
    marker = tmp_path / "started"
    try:
        thread = threading.Thread(
            target=lambda: result.append(client.call("slow", 1.0, str(marker)))
        )
        thread.start()
        assert wait_until(marker.exists), "the call never started"
        code, out = worker.terminate()
        thread.join(15)
        assert result == ["finished"]
        assert code == 0
        assert "drained=True" in out
    finally:
        queue.close()


def test_stop_waits_for_the_reply_of_a_call_run_on_the_executor() -> None:
    transport = MemoryTransport()
    executor = Executor(mode=ExecutionMode.THREAD, max_workers=2)
    worker = Worker(
        {"double": lambda x: x * 2}, transport, service_name="graceful", executor=executor
    )
    worker.start()
    client_queue = MessageQueue(transport, close_transport=False)
    client = RPCClient(client_queue, service_name="graceful", timeout=5)
    # Hold the loop that sends executor replies, so the call's body is done but its reply is not.
    loop_held = threading.Event()
    release_loop = threading.Event()

    def hold() -> None:
        loop_held.set()
        release_loop.wait(10)

    background_loop().loop.call_soon_threadsafe(hold)
    assert loop_held.wait(5)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.call("double", 21))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (worker.stop(10), stopped.set()), daemon=True)
    try:
        # The body ran (nothing in flight any more) while its reply waits for the loop.
        for _ in range(500):
            if executor.stats["submitted"] and not worker.in_flight:
                break
            threading.Event().wait(0.01)
        stopper.start()
        threading.Event().wait(0.2)  # give a premature close the chance to happen
    finally:
        release_loop.set()
    caller.join(10)
    stopper.join(10)
    client_queue.close()
    assert stopped.is_set()
    assert outcome == [42], outcome


def test_stop_waits_for_the_reply_of_an_inline_call() -> None:
    transport = MemoryTransport()
    worker = Worker({"double": lambda x: x * 2}, transport, service_name="graceful-inline")
    worker.start()
    client_queue = MessageQueue(transport, close_transport=False)
    client = RPCClient(client_queue, service_name="graceful-inline", timeout=5)
    body_done = threading.Event()
    stopping = threading.Event()
    reply = worker.queue.reply

    def reply_after_stop_began(*args: object, **kwargs: object) -> str:
        # The method returned; its reply is about to go out when the worker is told to stop.
        body_done.set()
        stopping.wait(5)
        # A premature stop closes the queue now; a graceful one waits for this reply.
        for _ in range(100):
            if worker.queue.closed:
                break
            threading.Event().wait(0.01)
        return reply(*args, **kwargs)  # type: ignore[arg-type]

    worker.queue.reply = reply_after_stop_began  # type: ignore[method-assign]
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(client.call("double", 21))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert body_done.wait(5)
    stopper = threading.Thread(target=lambda: (stopping.set(), worker.stop(10)), daemon=True)
    stopper.start()
    caller.join(10)
    stopper.join(10)
    client_queue.close()
    assert outcome == [42], outcome


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "defines no HANDLERS"),
        ("HANDLERS = {}\n", "HANDLERS is empty"),
        ("HANDLERS = [print]\n", "must be a dict"),
        ("HANDLERS = {'a': 5}\n", "not a callable"),
        ("HANDLERS = {'a': print}\nSERVICE_NAME = ''\n", "SERVICE_NAME"),
    ],
)
def test_contract_violations_exit_with_a_clear_error(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "bad.py").write_text(source)
    proc = subprocess.run(
        [sys.executable, "-m", "eventforge.worker", "--import", "bad", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_missing_module_says_where_to_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "eventforge.worker", "--import", "nothere", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot import handler module 'nothere'" in proc.stderr


def test_workers_joined_to_a_hub_share_calls_each_run_once(handlers_dir: Path) -> None:
    """Two workers with one service name as clients of a hub: calls split, none run twice."""
    hub = TCPServerTransport("127.0.0.1", 0).start()
    url = f"tcp://127.0.0.1:{hub.port}"
    workers = [
        WorkerProcess(handlers_dir, "--import", "handlers", "--transport", url, "--workers", "2")
        for _ in range(2)
    ]
    queue = MessageQueue(transport=hub)
    client = RPCClient(queue, service_name="math", timeout=10)
    try:
        pids = [client.call("whoami") for _ in range(20)]
        assert set(pids) == {w.proc.pid for w in workers}
        assert [client.call("compute", n) for n in range(5)] == [0, 2, 4, 6, 8]
    finally:
        for w in workers:
            code, _ = w.terminate()
            assert code == 0
        queue.close()


def test_cli_subcommand_runs_the_worker(handlers_dir: Path) -> None:
    w = WorkerProcess(
        handlers_dir, "worker", "--import", "handlers.py", "--port", "0", module="eventforge.cli"
    )
    try:
        queue, client = _client(w.port)
        assert client.call("compute", 4) == 8
        queue.close()
    finally:
        code, _ = w.terminate()
    assert code == 0


def test_worker_entrypoint_module_is_importable_without_side_effects() -> None:
    code = textwrap.dedent(
        """
        import sys, eventforge.worker
        print('eventforge_tcp' in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_worker_killed_mid_call_gives_the_caller_a_timeout(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    """Row 3: the worker process dies (SIGKILL) inside a handler; the caller gets RPCTimeout at
    its deadline, never a hang, and no request is left pending."""
    from eventforge.errors import RPCTimeout

    queue = MessageQueue(
        transport=TCPClientTransport("127.0.0.1", worker.port, reconnect_max_delay=0.2).connect()
    )
    client = RPCClient(queue, service_name="math", timeout=1.0)
    marker = tmp_path / "running"
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.call("slow", 30, str(marker))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert wait_until(marker.exists)
        worker.proc.kill()
        thread.join(15)
        assert not thread.is_alive(), "the call hung"
        assert len(outcome) == 1
        assert isinstance(outcome[0], RPCTimeout)
        assert queue.pending_requests == 0
    finally:
        queue.close()


def test_same_worker_serves_over_redis(handlers_dir: Path, redis_server: object) -> None:
    """--transport URL: the same handler module serves through a broker, unchanged."""
    pytest.importorskip("eventforge_redis")
    import eventforge

    url = redis_server.url  # type: ignore[attr-defined]
    w = WorkerProcess(handlers_dir, "--import", "handlers", "--transport", url)
    queue = MessageQueue(transport=eventforge.connect(url))
    try:
        assert w.fields["url"].startswith("redis")
        client = RPCClient(queue, service_name="math", timeout=10)
        assert client.call("compute", 7) == 14
        assert client.call("whoami") == w.proc.pid
    finally:
        queue.close()
        code, _ = w.terminate()
    assert code == 0
