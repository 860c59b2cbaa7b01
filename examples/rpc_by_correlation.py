"""Request-reply by hand: a reply topic and a correlation id, matched with a cache.

The requester publishes with ``reply_to`` and ``correlation_id`` headers and waits for the reply
whose correlation id matches (``wait_for_one`` with a predicate). ``MessageQueue.request`` and
``RPCServer`` / ``RPCClient`` do all this for you; this is the pattern underneath.

Run: ``python examples/rpc_by_correlation.py [transport-url]`` (default: in-process).
"""

from __future__ import annotations

import sys

from eventforge import MessageQueue, connect
from eventforge.message import Message, new_id


def main(url: str = "memory://") -> None:
    transport = connect(url)  # one transport: in-process queues must share it to meet
    with (
        transport,
        MessageQueue(transport, close_transport=False) as server,
        MessageQueue(transport, close_transport=False) as client,
    ):

        def handle_request(message: Message) -> None:
            result = sum(message.payload["numbers"])
            server.publish(
                message.headers["reply_to"],
                {"result": result},
                correlation_id=message.headers["correlation_id"],
            )

        server.subscribe("rpc.requests", handle_request, threaded=True)
        reply_topic = f"rpc.replies.{new_id()}"
        with client.cache(reply_topic) as replies:
            for attempt in range(50):  # network transports: until the server is subscribed
                correlation_id = f"req-{attempt}"
                client.publish(
                    "rpc.requests",
                    {"numbers": [1, 2, 3]},
                    reply_to=reply_topic,
                    correlation_id=correlation_id,
                )
                reply = replies.wait_for_one(
                    lambda m, c=correlation_id: m.headers.get("correlation_id") == c, timeout=0.2
                )
                if reply is not None:
                    print(f"result: {reply.payload['result']}")
                    return
        raise SystemExit("no reply")


if __name__ == "__main__":
    main(*sys.argv[1:2])
