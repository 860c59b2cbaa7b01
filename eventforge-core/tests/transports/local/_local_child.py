"""A separate process for the local:// crash tests. Usage: python _local_child.py <mode> <dir> ...

* ``publish <dir> <topic> <size>``: publish payloads ``[n, "x" * size]`` for n = 0, 1, ...
  forever (each send returns once committed) and write ``n`` to stdout after each.
* ``durable <dir> <topic> <name> <sleep>``: consume the named subscription; for each message,
  print its ``n`` (after handling it), then sleep.
* ``worker <dir> <queue> <sleep>``: consume the work queue; print ``seen n`` for each item,
  sleep, ack it, print ``acked n``.
* ``idle <dir> <topic>``: make an unnamed subscription, print ``ready`` and wait.
* ``stuck <dir> <topic> <max_messages> <overflow>``: make a bounded unnamed subscription,
  print ``sub <id>``; its handler prints the first message's payload and never returns.
* ``watch <dir> <topic> <max_messages>``: make a bounded unnamed subscription, print
  ``sub <id>``, then each payload it gets.
"""

from __future__ import annotations

import sys
import threading
import time

from eventforge.message import Message
from eventforge.transports.local import LocalTransport
from eventforge.workqueue import RetryPolicy, WorkQueue


def say(text: object) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def main() -> None:
    mode, directory = sys.argv[1], sys.argv[2]
    transport = LocalTransport(directory, lease=0.5, visibility_timeout=0.5)
    if mode == "publish":
        topic, size = sys.argv[3], int(sys.argv[4])
        filler = "x" * size
        n = 0
        while True:
            transport.send(Message(topic, [n, filler]))
            say(n)
            n += 1
    elif mode == "durable":
        topic, name, pause = sys.argv[3], sys.argv[4], float(sys.argv[5])

        def handle(message: Message) -> None:
            say(message.payload[0])
            time.sleep(pause)

        transport.subscribe(topic, handle, durable=name)
        say("ready")
        threading.Event().wait()
    elif mode == "worker":
        name, pause = sys.argv[3], float(sys.argv[4])
        queue = WorkQueue(name, transport, retry=RetryPolicy(max_attempts=10))
        say("ready")
        while True:
            delivery = queue.get(timeout=10)
            if delivery is None:
                continue
            say(f"seen {delivery.message.payload['n']}")
            time.sleep(pause)
            delivery.ack()
            say(f"acked {delivery.message.payload['n']}")
    elif mode == "idle":
        transport.subscribe(sys.argv[3], lambda m: None)
        say("ready")
        threading.Event().wait()
    elif mode == "stuck":

        def hold(message: Message) -> None:
            say(message.payload)
            threading.Event().wait()

        sid = transport.subscribe(
            sys.argv[3], hold, max_messages=int(sys.argv[4]), overflow=sys.argv[5]
        )
        say(f"sub {sid}")
        threading.Event().wait()
    elif mode == "watch":
        sid = transport.subscribe(
            sys.argv[3], lambda m: say(m.payload), max_messages=int(sys.argv[4])
        )
        say(f"sub {sid}")
        threading.Event().wait()


if __name__ == "__main__":
    main()
