"""Worker and relay processes for the eventforge-sql fault tests.

Usage: python _child_sql.py <mode> <url> <name> [options]

* ``inbox <url> <inbox> <effects table> <worker tag> <kill on event id or -> <lease>``: handle the
  inbox's events until none is due for 2 s; each handler writes an effect row tagged with the
  worker; on the given event id it writes its effect, then SIGKILLs its own process inside the
  open transaction.
* ``relay <url> <outbox table> <queue> <kill after n>``: relay the outbox into the sql work
  queue ``queue`` and SIGKILL the process once ``n`` messages were stored (mid-batch).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from eventforge.message import Message
from eventforge.workqueue import RetryPolicy
from eventforge_sql import (
    Inbox,
    Outbox,
    Relay,
    Schema,
    SqlWorkQueueBackend,
    TableNames,
    engine_from_url,
)
from eventforge_sql.testing import EffectLog


def inbox_worker(
    url: str, name: str, effects_table: str, tag: str, victim: str, lease: float
) -> None:
    engine = engine_from_url(url)
    effects = EffectLog(engine, effects_table)

    def handler(conn: Any, event: Any) -> None:
        effects.record(conn, event, worker=tag)
        if event.event_id == victim:
            os.kill(os.getpid(), signal.SIGKILL)

    retry = RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.2)
    inbox = Inbox(
        engine, handler, name=name, retry=retry, lease=lease, batch_size=20, poll_interval=0.05
    )
    print("ready", flush=True)
    with inbox.run(workers=1):
        while True:
            time.sleep(0.3)
            counts = inbox.counts()
            if counts["pending"] + counts["failed"] + counts["processing"] == 0:
                break


def relay(url: str, outbox_table: str, queue: str, kill_after: int) -> None:
    engine = engine_from_url(url)
    backend = SqlWorkQueueBackend(engine, queue)
    stored = 0

    def sink(messages: list[Message]) -> None:
        nonlocal stored
        for message in messages:  # one at a time, so the kill lands inside a batch
            backend.put(message)
            stored += 1
            if stored >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    outbox = Outbox(Schema(TableNames(outbox=outbox_table)))
    Relay(engine, sink, outbox, batch_size=50).drain()


def main() -> None:
    mode, url, name = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "inbox":
        inbox_worker(url, name, sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7]))
    elif mode == "relay":
        relay(url, name, sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
