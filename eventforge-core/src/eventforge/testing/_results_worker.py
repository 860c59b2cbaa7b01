"""A worker process for :mod:`eventforge.testing.results_processes`.

Usage: ``python -m eventforge.testing._results_worker <transport url> <prefix> [<results>]``.
Serves three tasks with stored results on ``<prefix>.ping``, ``<prefix>.hold`` and
``<prefix>.fail`` (``results`` as ``@task`` takes it: a URL, default ``True``, the transport's
own store), prints ``ready`` and runs until its standard input closes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from eventforge.config import connect
from eventforge.queue import MessageQueue
from eventforge.tasks import task


def serve(url: str, prefix: str, results: Any) -> None:
    """Serve the three tasks until standard input closes."""
    queue = MessageQueue(connect(url))

    @task(queue=queue, topic=f"{prefix}.ping", results=results, publish_result=False)
    def ping() -> int:
        return os.getpid()

    @task(queue=queue, topic=f"{prefix}.hold", results=results, publish_result=False)
    def hold(path: str, value: Any) -> Any:
        while not os.path.exists(path):  # running until the test creates the file
            time.sleep(0.01)
        return value

    @task(queue=queue, topic=f"{prefix}.fail", results=results, publish_result=False)
    def fail(reason: str) -> None:
        raise ValueError(reason)

    print("ready", flush=True)
    sys.stdin.read()
    queue.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else True)
