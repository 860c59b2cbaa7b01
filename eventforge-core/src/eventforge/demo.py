"""``eventforge demo``: a short walk-through on the embedded default transport.

It lists what is installed, then does a publish/subscribe round trip and a request/reply over
the in-process :class:`~eventforge.transports.memory.MemoryTransport`, printing each step.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence

from .message import Message

__all__ = ["main"]


def _installed() -> None:
    from ._registry import registry

    reg = registry()
    print("Installed plugins:")
    for kind in ("transport", "serializer"):
        print(f"  {kind}s: {', '.join(reg.names(kind))}")


def _pubsub(count: int) -> None:
    from .config import connect
    from .queue import MessageQueue

    transport = connect("memory://")
    print(f"\nPublish/subscribe over {transport!r}:")
    received: list[Message] = []
    done = threading.Event()

    def on_order(message: Message) -> None:
        received.append(message)
        print(f"  received {message.topic} -> {message.payload}")
        if len(received) == count:
            done.set()

    with MessageQueue(transport) as queue:
        queue.subscribe("orders.*", on_order)
        for n in range(1, count + 1):
            queue.publish("orders.created", {"order": n, "total": 10 * n})
            print(f"  published orders.created #{n}")
        if not done.wait(5.0):
            raise SystemExit(f"demo failed: {len(received)} of {count} messages arrived")

        queue.subscribe("math.add", lambda m: queue.reply(m, sum(m.payload)))
        reply = queue.request("math.add", [2, 3], timeout=5.0)
        print(f"\nRequest/reply: math.add [2, 3] -> {reply.payload if reply else 'no reply'}")
    print(f"\nDone: {len(received)} of {count} messages delivered in order.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the walk-through; returns the exit code."""
    parser = argparse.ArgumentParser(prog="eventforge demo", description=__doc__)
    parser.add_argument("--count", type=int, default=3, help="messages to publish (default 3)")
    args = parser.parse_args(argv)
    _installed()
    _pubsub(max(1, args.count))
    return 0
