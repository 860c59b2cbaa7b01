"""A separate consumer process for the cross-process and SIGKILL tests.

Usage: python _child.py <mode> <redis url> <name> [options]

* ``group <url> <topic> <group>``: join ``group`` on ``topic``; for every message, RPUSH its
  payload to ``effects:<group>`` (the side-effect table); a payload starting with ``hang``
  then blocks the handler forever.
* ``rpc <url> <service>``: serve ``add``, ``whoami`` and ``record`` (RPUSH its argument to
  ``effects:<service>``, so a test counts executions) on RPC service ``service``.
* ``worker <url> <queue> <sleep> <dedupe>``: consume the work queue; the handler records the
  payload in ``effects:<queue>`` (RPUSH) first, then sleeps, then returns (ack).
"""

from __future__ import annotations

import os
import sys
import threading

from eventforge.message import Message


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    from eventforge_redis import RedisTransport

    transport = RedisTransport.from_url(url, claim_idle=1.0, block=0.2)
    if mode == "group":
        topic, group = sys.argv[3], sys.argv[4]

        def on_message(message: Message) -> None:
            transport.client.rpush(f"effects:{group}", f"{os.getpid()}:{message.payload}")
            if str(message.payload).startswith("hang"):
                threading.Event().wait()  # stuck mid-handler until SIGKILLed

        transport.subscribe(topic, on_message, group=group)
    elif mode == "rpc":
        from eventforge.queue import MessageQueue
        from eventforge.rpc import RPCServer

        server = RPCServer(MessageQueue(transport=transport), service_name=sys.argv[3])
        server.add_method("add", lambda a, b: a + b)
        server.add_method("whoami", os.getpid)
        service = sys.argv[3]
        server.add_method("record", lambda x: transport.client.rpush(f"effects:{service}", x))
        server.serve(blocking=False)
    elif mode == "worker":
        import time

        from eventforge.workqueue import WorkQueue

        name, sleep, dedupe = sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
        backend = transport.work_queue_backend(
            name, RetryPolicyDefault(), dedupe_ttl=60.0 if dedupe else None
        )
        queue = WorkQueue(name, backend=backend)

        def handle(message: Message) -> None:
            transport.client.rpush(f"effects:{name}", str(message.payload))
            time.sleep(sleep)

        queue.consume(handle, concurrency=1)
    print("ready", flush=True)
    threading.Event().wait()


def RetryPolicyDefault() -> object:
    from eventforge.workqueue import RetryPolicy

    return RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.2)


if __name__ == "__main__":
    main()
