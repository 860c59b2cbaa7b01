"""RPC over TCP through server outages: a call its caller gave up on never runs later.

The server is a real process hosting an RPCServer; its method appends one line per execution
to a file, so the test counts executions on the server side. Outages are a SIGKILL and
restart on the same port, and a SIGSTOP (a frozen server whose socket still accepts bytes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eventforge.deadlines import DEADLINE_HEADER
from eventforge.errors import NoRespondersError, RPCTimeout, TransportError
from eventforge.message import Message
from eventforge.middleware import Middleware
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer, with_retry
from eventforge.testing.brokers import free_port
from eventforge_tcp._control import COUNT, PING, control_frame
from eventforge_tcp._requests import drop_abandoned_requests
from eventforge_tcp.framing import HEADER, FrameDecoder
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport

from .helpers import raw_connect, wait_until

FAST = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.1}

SERVER_SCRIPT = """
import sys, threading, time
from eventforge import MessageQueue, RPCServer
from eventforge_tcp.transport import TCPServerTransport

port, log_path, life = int(sys.argv[1]), sys.argv[2], sys.argv[3]
queue = MessageQueue(transport=TCPServerTransport("127.0.0.1", port).start())
server = RPCServer(queue, service_name="ledger")

@server.register()
def work(call_id):
    with open(log_path, "a") as log:
        log.write(f"{call_id} {life} {time.time()!r}\\n")
    return "ok"

server.serve(blocking=False)
print("ready", flush=True)
threading.Event().wait()
"""


def _spawn(port: int, log: Path, life: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(port), str(log), life],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"server process did not start: {line!r}"
    return proc


def _executions(log: Path) -> list[tuple[str, str]]:
    """(call id, server life) of each execution, in order."""
    return [(call_id, life) for call_id, life, _ in _timed_executions(log)]


def _timed_executions(log: Path) -> list[tuple[str, str, float]]:
    """(call id, server life, start time by the wall clock) of each execution, in order."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(row[0], row[1], float(row[2])) for row in rows]


class _Attempts(Middleware):
    """Records the window of every request sent: from its timestamp to its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.windows: list[tuple[float, float]] = []

    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        if message.reply_to is not None:
            deadline = message.headers.get(DEADLINE_HEADER, message.timestamp + self.timeout)
            self.windows.append((message.timestamp, deadline))
        send(message)


class _Deadlines(Middleware):
    """Records each RPC call's deadline (its ``ef-deadline`` header) by its first argument."""

    def __init__(self) -> None:
        self.of: dict[str, float] = {}

    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        payload = message.payload
        if message.reply_to is not None and isinstance(payload, dict) and payload.get("args"):
            self.of[str(payload["args"][0])] = float(message.headers[DEADLINE_HEADER])
        send(message)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_calls_that_timed_out_never_run_on_the_restarted_server(tmp_path: Path) -> None:
    """Calls with short timeouts through a SIGKILL and restart: a call whose caller got
    ``NoRespondersError`` or ``TransportError`` (nothing was sent) never runs; one that raised
    ``RPCTimeout`` runs on the restarted server only if it started there before its deadline
    (docs/concepts.md: held requests whose deadline passed are dropped, servers skip expired
    ones; a call started just before its deadline may still answer too late); every "ok" ran
    exactly once."""
    port, log = free_port(), tmp_path / "executions.log"
    proc = _spawn(port, log, "first")
    deadlines = _Deadlines()
    queue = MessageQueue(
        transport=TCPClientTransport("127.0.0.1", port, **FAST).connect(),  # type: ignore[arg-type]
        middleware=[deadlines],
    )
    client = RPCClient(queue, service_name="ledger", timeout=0.3)
    outcomes: dict[str, str] = {}
    stop = threading.Event()

    def caller() -> None:
        n = 0
        while not stop.is_set():
            call_id = f"c{n}"
            n += 1
            try:
                outcomes[call_id] = client.call("work", call_id)
            except RPCTimeout:
                outcomes[call_id] = "timeout"
            except (NoRespondersError, TransportError) as exc:
                outcomes[call_id] = type(exc).__name__
                time.sleep(0.02)

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        assert wait_until(lambda: len(_executions(log)) >= 20), "no calls ran before the fault"
        proc.kill()
        proc.wait(10)
        time.sleep(1.0)  # calls keep being made (and given up on) during the outage
        proc = _spawn(port, log, "second")
        assert wait_until(lambda: any(life == "second" for _, life in _executions(log)), 10)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(10)
        queue.close()
        _stop(proc)
    runs: dict[str, list[str]] = {}
    started: dict[str, float] = {}
    for call_id, life, at in _timed_executions(log):
        runs.setdefault(call_id, []).append(life)
        started[call_id] = at
    failed = {c for c, outcome in outcomes.items() if outcome != "ok"}
    assert failed, "the outage made no call fail: it tested nothing"
    never_sent = sorted(c for c in failed if outcomes[c] != "timeout" and c in runs)
    assert not never_sent, f"calls refused at once ran: {[(c, outcomes[c]) for c in never_sent]}"
    ran_late = sorted(
        c for c in failed if "second" in runs.get(c, []) and started[c] > deadlines.of[c]
    )
    assert not ran_late, (
        "timed-out calls started on the restarted server after their deadline: "
        f"{[(c, started[c] - deadlines.of[c]) for c in ran_late]}"
    )
    assert all(len(lives) == 1 for lives in runs.values()), "a call ran twice"
    assert all(c in runs for c, outcome in outcomes.items() if outcome == "ok")
    print(f"\nTCP restart: {len(outcomes)} calls, {len(failed)} failed, none ran later")


def test_with_retry_through_a_frozen_server_never_runs_an_attempt_after_its_deadline(
    tmp_path: Path,
) -> None:
    """with_retry(max_retries=8, retry_on=(RPCTimeout, TransportError)) through a 2.5 s
    SIGSTOP: the attempts made meanwhile time out with their bytes already in the server's
    socket. Checked on every execution: it started within one attempt's window (after it was
    sent, before its deadline) and no attempt ran twice, so the attempts that timed out in the
    socket never run. Typically the method runs once; twice only if the server started an
    attempt just before its deadline and the reply came too late."""
    port, log = free_port(), tmp_path / "executions.log"
    proc = _spawn(port, log, "only")
    attempts = _Attempts(timeout=0.4)
    transport = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    queue = MessageQueue(transport=transport, middleware=[attempts])
    client = RPCClient(queue, service_name="ledger", timeout=0.4)
    retrying = with_retry(
        client,
        max_retries=8,
        retry_on=(RPCTimeout, TransportError),
        initial_backoff=0.2,
        max_backoff=0.5,
        jitter=False,
    )
    try:
        assert client.call("work", "warm-up") == "ok"
        os.kill(proc.pid, signal.SIGSTOP)
        resume = threading.Timer(2.5, os.kill, (proc.pid, signal.SIGCONT))
        resume.start()
        try:
            assert retrying.call("work", "logical-call") == "ok"
        finally:
            resume.join(10)
    finally:
        queue.close()
        os.kill(proc.pid, signal.SIGCONT)
        _stop(proc)
    windows = attempts.windows[1:]  # the logical call's attempts
    assert len(windows) >= 2, "no attempt timed out during the outage: nothing was tested"
    runs = [at for call_id, _, at in _timed_executions(log) if call_id == "logical-call"]
    assert runs, "the logical call never ran"
    owners = []
    for started in runs:
        owner = [n for n, (sent, deadline) in enumerate(windows) if sent <= started <= deadline]
        assert owner, f"an execution started at {started}, outside every attempt's window"
        owners.extend(owner)
    assert len(owners) == len(set(owners)), "an attempt ran twice"
    print(f"\nwith_retry through a frozen server: {len(windows)} attempts, {len(runs)} run(s)")


def test_held_requests_past_their_deadline_are_dropped_at_the_reconnect() -> None:
    """A request held while the client was disconnected is sent after the reconnect only if
    its caller still waits; one past its deadline is dropped and counted."""
    srv = TCPServerTransport("127.0.0.1", 0).start()
    port = srv.port
    client = TCPClientTransport("127.0.0.1", port, **FAST).connect()  # type: ignore[arg-type]
    got: list[str] = []
    try:
        srv.close()
        assert wait_until(lambda: not client.connected)
        now = time.time()
        for name, deadline in (("stale", now + 0.05), ("live", now + 30)):
            request = Message("held.req", name, {DEADLINE_HEADER: deadline}, reply_to="_inbox.x")
            client.send(request)
        client.send(Message("held.req", "publish"))  # a publish carries no deadline: kept
        assert client.stats()["held_frames"] == 3
        time.sleep(0.1)  # the first request's caller has stopped waiting
        srv = TCPServerTransport("127.0.0.1", port).start()
        srv.subscribe("held.req", lambda m: got.append(m.payload))
        assert wait_until(lambda: len(got) == 2)
        assert got == ["live", "publish"]
        assert client.stats()["held_requests_dropped"] == 1
    finally:
        client.close()
        srv.close()


def _frame(codec_encode: bytes) -> bytes:
    return HEADER.pack(len(codec_encode)) + codec_encode


def test_held_requests_whose_send_counted_raised_are_dropped_the_rest_kept() -> None:
    """Held after its link dropped: a request sent with send_counted (its caller already got
    TransportError) is dropped; a counted publish, a request whose caller still waits for a
    "nobody" answer and a plain request within their deadline are sent."""
    client = TCPClientTransport("127.0.0.1", 1)
    encode, decode = client.codec.encode, client.codec.decode
    live = {DEADLINE_HEADER: time.time() + 30}
    request = Message("t", 1, dict(live), reply_to="_inbox.x")
    publish = Message("t", 2, dict(live))  # a deadline header without reply_to: not a request
    counted_request = control_frame(COUNT, None) + _frame(encode(request))
    counted_publish = control_frame(COUNT, None) + _frame(encode(publish))
    reporting = control_frame(COUNT, {"only_zero": True}) + _frame(encode(request))
    plain_request = _frame(encode(request))
    held = [counted_request, counted_publish, reporting, plain_request]
    kept, dropped = drop_abandoned_requests(held, decode)
    assert dropped == 1
    assert kept == [counted_publish, reporting, plain_request]
    client.close()


@pytest.mark.parametrize("subscribe", ["plain", "group", "wildcard"])
def test_request_to_nobody_fails_fast_and_any_responder_counts(subscribe: str) -> None:
    """On TCP a request nobody listens to raises NoRespondersError at once; a plain, group or
    wildcard subscriber on another client counts as a responder."""
    srv = TCPServerTransport("127.0.0.1", 0).start()
    asker = MessageQueue(transport=TCPClientTransport("127.0.0.1", srv.port).connect())  # type: ignore[arg-type]
    answerer = MessageQueue(transport=TCPClientTransport("127.0.0.1", srv.port).connect())  # type: ignore[arg-type]
    try:
        with pytest.raises(NoRespondersError, match=r"svc\.echo"):
            asker.request("svc.echo", 1, timeout=30)
        assert asker.stats["no_responders"] == 1
        pattern = "svc.*" if subscribe == "wildcard" else "svc.echo"
        group = "echoers" if subscribe == "group" else None
        answerer.subscribe(pattern, lambda m: answerer.reply(m, m.payload), group=group)
        assert wait_until(lambda: srv.stats()["subscriptions"] >= 1)
        reply = asker.request("svc.echo", 2, timeout=5)
        assert reply is not None
        assert reply.payload == 2
    finally:
        asker.close()
        answerer.close()
        srv.close()


def test_a_count_asking_only_for_zero_is_answered_only_when_nobody_took_the_message() -> None:
    """Wire level: ``$tcp.count`` with ``{"only_zero": true}`` gets ``$tcp.counted`` with
    count 0 when nobody received the message, and no answer at all when someone did."""
    srv = TCPServerTransport("127.0.0.1", 0).start()
    srv.subscribe("wire.taken", lambda m: None)
    sock = raw_connect(srv.port)
    codec = srv.codec
    try:
        for topic, marker in (("wire.taken", "m1"), ("wire.nobody", "m2")):
            count = control_frame(COUNT, {"only_zero": True}, frame_id=marker)
            sock.sendall(count + _frame(codec.encode(Message(topic, 1))))
        sock.sendall(control_frame(PING, None))  # answered after any COUNTED queued before it
        decoder, answers = FrameDecoder(), []
        while not any(b"$tcp.pong" in a for a in answers):
            answers.extend(decoder.feed(sock.recv(65536)))
        counted = [codec.decode(a) for a in answers if b"$tcp.counted" in a]
        assert [(m.correlation_id, m.payload) for m in counted] == [("m2", {"count": 0})]
    finally:
        sock.close()
        srv.close()


def test_an_inline_rpc_server_answers_on_its_io_thread_and_a_plain_one_does_not() -> None:
    """``RPCServer(inline=True)`` on a TCP server runs methods on the transport's I/O thread
    (no hand-off to a delivery thread); the default server runs them on a thread of its own."""
    server_queue = MessageQueue(transport=TCPServerTransport("127.0.0.1", 0).start())
    port = server_queue.transport.port  # type: ignore[attr-defined]
    caller = MessageQueue(transport=TCPClientTransport("127.0.0.1", port).connect())
    inline = RPCServer(server_queue, service_name="inline", inline=True)
    plain = RPCServer(server_queue, service_name="plain")
    for server in (inline, plain):
        server.add_method("where", lambda: threading.current_thread().name)
        server.serve(blocking=False)
    try:
        assert RPCClient(caller, "inline", timeout=10).where().endswith("-io")
        assert not RPCClient(caller, "plain", timeout=10).where().endswith("-io")
    finally:
        inline.stop()
        plain.stop()
        caller.close()
        server_queue.close()
