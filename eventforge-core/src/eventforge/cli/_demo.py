"""``eventforge demo``: a walk-through of the 2x2 on the embedded default transport.

Each section prints what it does and what came back: publish/subscribe (fan-out, wildcards,
groups), request/reply, RPC, the Executor in its three modes, ``@task`` with callbacks, a work
queue with a retry and a dead letter, then two processes talking over ``local://`` (no broker),
and finally a worker in another process called over TCP (when eventforge-tcp is installed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from eventforge.config import connect
from eventforge.errors import MethodNotFound, NoRespondersError, PluginNotFoundError, RemoteError
from eventforge.execution import ExecutionMode, Executor
from eventforge.message import Message
from eventforge.plugins import registry
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCClient, RPCServer
from eventforge.service.run import status_table
from eventforge.tasks import task
from eventforge.transports.local import LocalTransport
from eventforge.workqueue import RetryPolicy, WorkQueue

__all__ = ["main"]


def _heading(title: str) -> None:
    print(f"\n== {title}")


def square(n: int) -> int:
    """Module-level, so the PROCESS executor can pickle it."""
    return n * n


def _plugins() -> None:

    reg = registry()
    _heading("Installed plugins (eventforge plugins shows more)")
    for kind in ("transport", "serializer", "dispatcher", "observer"):
        print(f"  {kind + 's:':13} {', '.join(reg.names(kind)) or '(none)'}")


def _pubsub(count: int) -> None:

    _heading("Publish/subscribe: MessageQueue over MemoryTransport (local pub-sub)")
    with MessageQueue() as queue:

        def audit(message: Message) -> None:
            print(f"  audit      got {message.topic} -> {message.payload}")

        queue.subscribe("orders.**", audit)
        for member in ("packer-1", "packer-2"):
            queue.subscribe(
                "orders.created",
                lambda m, who=member: print(f"  {who}   got {m.topic} #{m.payload['order']}"),
                group="packers",
            )
        for n in range(1, count + 1):
            queue.publish("orders.created", {"order": n})
        print("  (every message reached 'audit'; the 'packers' group shared them)")

        _heading("Request/reply on the same queue")
        queue.subscribe("math.add", lambda m: queue.reply(m, sum(m.payload)))
        reply = queue.request("math.add", [2, 3], timeout=5.0)
        print(f"  request math.add [2, 3] -> {reply.payload if reply else 'no reply'}")
        queue.subscribe("math.silent", lambda m: None)  # receives requests, never answers
        silent = queue.request("math.silent", [], timeout=0.2)
        print(f"  request to a topic nobody answers -> {silent} after the timeout")
        try:
            queue.request("math.nobody", [], timeout=5.0)
        except NoRespondersError:
            print("  request to a topic nobody subscribes to -> NoRespondersError at once")


def _rpc() -> None:

    _heading("RPC: call a method by name (remote request-reply, here in-process)")
    with MessageQueue() as queue:
        server = RPCServer(queue, service_name="calculator")

        @server.register()
        def divide(a: float, b: float) -> float:
            return a / b

        server.serve(blocking=False)
        client = RPCClient(queue, service_name="calculator", timeout=5.0)
        print(f"  client.divide(10, 4) -> {client.divide(10, 4)}")
        try:
            client.divide(1, 0)
        except RemoteError as exc:
            print(f"  client.divide(1, 0) raised RemoteError: {exc}")
        try:
            client.call("sqrt", 2)
        except MethodNotFound as exc:
            print(f"  client.call('sqrt', 2) raised MethodNotFound: {exc}")
        server.stop()


def _executor() -> None:

    _heading("Executor: local request-reply in three modes")
    for mode in (ExecutionMode.SEQUENTIAL, ExecutionMode.THREAD, ExecutionMode.PROCESS):
        with Executor(mode=mode, max_workers=2) as executor:
            results = executor.map(square, [1, 2, 3, 4])
            values = [r.value for r in results]
            print(f"  {mode.name:10} map(square, [1, 2, 3, 4]) -> {values}")
    with Executor(mode=ExecutionMode.THREAD) as executor:
        failed = executor.result(executor.submit(int, "not a number"))
        print(
            f"  a failing task is captured, not raised: status={failed.status.name}, "
            f"error={type(failed.error).__name__}"
        )


def _task() -> None:

    _heading("@task: the same lifecycle for a direct call and a queue trigger")
    with MessageQueue() as queue:
        queue.subscribe(
            "shout.success", lambda m: print(f"  published result on {m.topic}: {m.payload!r}")
        )

        @task(
            queue=queue,
            topic="shout",
            on_success=lambda ctx: print(f"  on_success: {ctx.result!r}"),
        )
        def shout(text: str) -> str:
            return text.upper()

        print(f"  direct call shout('hello') -> {shout('hello')!r}")
        queue.publish("shout", "world")
        print("  (publishing 'world' to the task's topic ran the identical lifecycle)")


def _workqueue() -> None:

    _heading("WorkQueue: ack, retry with backoff, dead letters")
    attempts: dict[Any, int] = {}

    def handle(message: Message) -> None:
        attempts[message.payload] = attempts.get(message.payload, 0) + 1
        if message.payload == "poison":
            raise ValueError("cannot process this one")

    retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
    with WorkQueue("demo", retry=retry) as queue:
        for item in ("a", "poison", "b"):
            queue.put(item)
        queue.process(handle, timeout=5.0)
        dead = queue.dead_letters()
        print(f"  attempts per item: {attempts}")
        print(f"  dead letters: {[(d.message.payload, d.attempts) for d in dead]}")


def _cross_process() -> None:

    _heading("Remote: a worker in another process, called over TCP")
    try:
        registry().transport("tcp")
    except PluginNotFoundError:
        print("  skipped: install eventforge-tcp to see this part")
        return

    command = [
        sys.executable,
        "-m",
        "eventforge.worker",
        "--import",
        "eventforge.cli._demo_handlers",
        "--port",
        "0",
    ]
    print("  starting: python -m eventforge.worker --import eventforge.cli._demo_handlers --port 0")
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        ready = worker.stdout.readline().strip()
        print(f"  worker says: {ready}")
        url = next(part.split("=", 1)[1] for part in ready.split() if part.startswith("url="))
        with MessageQueue(connect(url)) as queue:
            client = RPCClient(queue, service_name="demo", timeout=10.0)
            print(
                f"  square(12) -> {client.square(12)} computed by pid {client.whoami()} "
                f"(this process is pid {os.getpid()})"
            )
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(15)
        print(f"  worker stopped gracefully on SIGTERM (exit code {code})")


def _service() -> None:
    import json
    import urllib.request

    _heading("Service: eventforge run, and health per subscription")
    command = [sys.executable, "-m", "eventforge.cli", "run", "eventforge.cli._demo_service:svc"]
    command += ["--health-port", "0", "--log-level", "warning"]
    print("  starting: eventforge run eventforge.cli._demo_service:svc --health-port 0")
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        ready = runner.stdout.readline().strip()
        print(f"  it says: {ready}")
        health = next(p.split("=", 1)[1] for p in ready.split() if p.startswith("health="))
        with urllib.request.urlopen(f"{health}/health", timeout=10) as response:
            report = json.load(response)
        print(f"  GET {health}/health:")
        for line in status_table(report).splitlines():
            print(f"    {line}")
    finally:
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(30)
        print(f"  service drained and stopped on SIGTERM (exit code {code})")


def local_peer(directory: str, count: int) -> None:
    """The other process of the ``local://`` part: answers ``count`` greetings, then exits."""
    answered = threading.Semaphore(0)
    with MessageQueue(LocalTransport(directory)) as queue:

        def greet(message: Message) -> None:
            queue.publish("greetings.reply", f"hello {message.payload}, from pid {os.getpid()}")
            answered.release()

        queue.subscribe("greetings", greet, durable="greeter")
        for _ in range(count):
            answered.acquire(timeout=30)


def _local_processes(count: int) -> None:
    _heading("local://: two processes on this machine, no broker (kept until consumed)")
    with tempfile.TemporaryDirectory() as directory, LocalTransport(directory) as transport:
        queue = MessageQueue(transport)
        replies: list[str] = []
        done = threading.Event()

        def on_reply(message: Message) -> None:
            replies.append(message.payload)
            if len(replies) == count:
                done.set()

        queue.subscribe("greetings.reply", on_reply)
        # The named subscription exists before its process does: it keeps what comes.
        queue.unsubscribe(queue.subscribe("greetings", lambda m: None, durable="greeter"))
        names = ["ada", "grace", "linus", "barbara", "ken"][:count]
        for name in names:
            queue.publish("greetings", name)
        print(f"  published {names} to the named subscription 'greeter' (nobody listening yet)")
        code = f"from eventforge.cli._demo import local_peer; local_peer({directory!r}, {count})"
        peer = subprocess.Popen([sys.executable, "-c", code])
        try:
            done.wait(60)
            for reply in replies:
                print(f"  reply: {reply}")
        finally:
            peer.wait(30)
            queue.close()
        print(f"  publisher pid {os.getpid()}; the listener exited with code {peer.returncode}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the walk-through; returns the exit code."""
    parser = argparse.ArgumentParser(prog="eventforge demo", description=__doc__)
    parser.add_argument("--count", type=int, default=4, help="orders to publish (default 4)")
    parser.add_argument("--local", action="store_true", help="skip the cross-process part")
    parser.add_argument("--verbose", action="store_true", help="also show eventforge's log")
    args = parser.parse_args(argv)
    logger = logging.getLogger("eventforge")
    previous_level = logger.level
    if not args.verbose:
        # The demo provokes failures on purpose and reports them itself.
        logger.setLevel(logging.CRITICAL)
    try:
        _plugins()
        _pubsub(max(1, args.count))
        _rpc()
        _executor()
        _task()
        _workqueue()
        if not args.local:
            _local_processes(min(5, max(1, args.count)))
            _cross_process()
            _service()
    finally:
        logger.setLevel(previous_level)
    print("\nDone. Next: docs/concepts.md, then `eventforge plugins` and docs/transports/.")
    return 0
