"""A supervisor of consumer processes whose handler dies on a poison item (os._exit).

Usage: python _poison_supervisor.py <redis url> <queue> <max attempts>

It imports eventforge once, then forks one consumer process at a time and starts a new one
each time the last one died, after a restart delay, as a process supervisor would (forking an already-imported
interpreter keeps start-up cheap on a loaded machine). Each consumer counts itself in
``starts:<queue>``, consumes ``<queue>`` (``claim_idle`` 0.5 s) and records every payload its
handler gets in ``effects:<queue>``; on the payload ``"poison"`` the handler ends the process
with ``os._exit``, holding the item. Stop it by killing its process group.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import eventforge_redis.workqueue  # noqa: F401  (imported here once, not in every consumer)
import redis  # noqa: F401  (the same)
from eventforge.message import Message
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_redis import RedisTransport

CLAIM_IDLE = 0.5
RESTART_DELAY = 0.7


def consume(url: str, name: str, max_attempts: int) -> None:
    """The consumer process: runs until its handler meets the poison."""
    transport = RedisTransport.from_url(url, claim_idle=CLAIM_IDLE, block=0.2)
    transport.client.incr(f"starts:{name}")
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff=0.05, max_backoff=0.2)
    queue = WorkQueue(name, transport, retry=policy)

    def handle_or_die(message: Message) -> None:
        transport.client.rpush(f"effects:{name}", str(message.payload))
        if message.payload == "poison":
            os._exit(3)  # the handler takes the whole consumer process down

    queue.consume(handle_or_die, concurrency=1)
    threading.Event().wait()


def main() -> None:
    url, name, max_attempts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Forking is safe only while this process runs no other thread.
    assert threading.active_count() == 1, threading.enumerate()
    print("ready", flush=True)
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                consume(url, name, max_attempts)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        # A supervisor's restart delay, longer than claim_idle: the dead consumer's entry is
        # due for takeover when its successor starts, which takes it over before reading new
        # entries (the case where a poison item used to starve the whole queue).
        time.sleep(RESTART_DELAY)


if __name__ == "__main__":
    main()
