"""A controller waits until three worker processes are ready, then starts a test run.

Workers announce the role ``worker``; the controller waits for three of them
(``wait_until_ready``), publishes ``test.start`` and collects one ``test.done`` per worker with a
:class:`~eventforge.queue.cache.SubscriptionCache`.

Run: ``python examples/controller_waits_for_workers.py [transport-url]``. Without a URL the
controller starts a TCP server on a free port and the workers connect to it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from eventforge import MessageQueue, connect
from eventforge.queue.cache import WaitMode

WORKERS = 3


def worker(url: str, index: int) -> None:
    queue = MessageQueue(connect(url))
    stop = threading.Event()

    def run_tests(message: object) -> None:
        queue.publish("test.done", {"worker": index, "passed": True})

    queue.subscribe("test.start", run_tests, threaded=True)
    queue.subscribe("test.stop", lambda message: stop.set())
    queue.announce_ready(["worker"])
    stop.wait(60)
    queue.close()


def controller(url: str | None) -> None:
    server = None
    if url is None:
        from eventforge_tcp.transport import TCPServerTransport

        server = TCPServerTransport("127.0.0.1", 0).start()
        url = f"tcp://127.0.0.1:{server.port}"
        queue = MessageQueue(server, close_transport=False)
    else:
        queue = MessageQueue(connect(url))
    done = queue.cache("test.done")
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", url, str(i)])
        for i in range(WORKERS)
    ]
    try:
        if not queue.wait_until_ready({"worker": WORKERS}, timeout=60):
            raise SystemExit("the workers did not all become ready")
        print(f"{WORKERS} workers ready")
        targets = [lambda m, i=i: m.payload["worker"] == i for i in range(WORKERS)]
        results: dict[int, object] = {}
        deadline = time.monotonic() + 30
        while len(results) < WORKERS and time.monotonic() < deadline:
            queue.publish("test.start", {"suite": "regression"})
            results = done.wait_for_many(targets, WaitMode.ALL_IN_RANDOM_ORDER, timeout=1)
            if len(results) < WORKERS:
                done.drain()
        print(f"{len(results)} workers finished the suite")
        queue.publish("test.stop")
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        done.close()
        queue.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        controller(sys.argv[1] if len(sys.argv) > 1 else None)
