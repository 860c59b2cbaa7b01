"""The three ways to wait for several messages with a SubscriptionCache.

``ALL_IN_GIVEN_ORDER``: every target, in that order; ``ALL_IN_RANDOM_ORDER``: every target, any
order; ``ANY_OF_GIVEN_MSGS``: the first message matching any target. The result maps each
matched target's index to the message that matched it; after a timeout it holds what matched.

Run: ``python examples/wait_for_many.py``.
"""

from __future__ import annotations

import threading

from eventforge import MessageQueue
from eventforge.queue.cache import WaitMode


def publish_later(queue: MessageQueue, *states: str) -> threading.Thread:
    def run() -> None:
        for state in states:
            queue.publish("device.state", state)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def payloads(result: dict[int, object]) -> dict[int, object]:
    return {index: message.payload for index, message in result.items()}  # type: ignore[attr-defined]


def main() -> None:
    with MessageQueue() as queue, queue.cache("device.*") as cache:
        boot = ["booting", "ready", "running"]

        publish_later(queue, "booting", "ready", "running").join()
        result = cache.wait_for_many(boot, WaitMode.ALL_IN_GIVEN_ORDER, timeout=5)
        print("given order:", payloads(result))

        publish_later(queue, "running", "booting", "ready").join()
        result = cache.wait_for_many(boot, WaitMode.ALL_IN_GIVEN_ORDER, timeout=0.2)
        print("given order, out of order:", payloads(result), "(timed out)")
        cache.drain()

        publish_later(queue, "running", "booting", "ready").join()
        result = cache.wait_for_many(boot, WaitMode.ALL_IN_RANDOM_ORDER, timeout=5)
        print("random order:", payloads(result))

        publish_later(queue, "idle", "error").join()
        result = cache.wait_for_many(["error", "crashed"], WaitMode.ANY_OF_GIVEN_MSGS, timeout=5)
        print("any of:", payloads(result))


if __name__ == "__main__":
    main()
