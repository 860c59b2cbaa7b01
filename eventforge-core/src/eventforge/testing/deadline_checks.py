"""A scenario any transport's tests can run: a request past its deadline never reaches a handler.

:func:`check_expired_request_never_reaches_a_handler` queues a request behind a busy handler
until its caller has timed out, then frees the handler: the request must be skipped (counted
in the serving queue's ``stats["expired_requests"]``), not run for nobody. The queue
conformance suite runs it; transports without that suite call it from their own tests.
"""

from __future__ import annotations

import threading
import time

from eventforge.errors import NoRespondersError
from eventforge.message import Message
from eventforge.queue import MessageQueue

__all__ = ["check_expired_request_never_reaches_a_handler"]

_PROBE = "probe"


def _wait_for_responder(client: MessageQueue, topic: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if client.request(topic, _PROBE, timeout=0.1) is not None:
                return
        except NoRespondersError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answered requests on {topic!r} within {wait}s")


def check_expired_request_never_reaches_a_handler(
    server: MessageQueue, client: MessageQueue, topic: str, *, wait: float = 5.0
) -> None:
    """Run the scenario with ``server`` answering on ``topic`` and ``client`` asking.

    A threaded handler is held busy by a first request; a second request with a 0.2 s
    timeout waits in its backlog and times out; the handler is freed 0.3 s later. The second
    request must never run, and a third one afterwards must.
    """
    started, release = threading.Event(), threading.Event()
    handled: list[object] = []

    def handler(message: Message) -> None:
        if message.payload != _PROBE:
            handled.append(message.payload)
        if message.payload == "first":
            started.set()
            release.wait(wait)
        server.reply(message, message.payload)

    server.subscribe(topic, handler, threaded=True)
    _wait_for_responder(client, topic, wait)
    first: list[Message | None] = []
    thread = threading.Thread(
        target=lambda: first.append(client.request(topic, "first", timeout=wait))
    )
    thread.start()
    try:
        assert started.wait(wait), "the first request never reached the handler"
        before = client.stats["requests_timed_out"]
        assert client.request(topic, "stale", timeout=0.2) is None, "the busy handler answered"
        assert client.stats["requests_timed_out"] == before + 1
        time.sleep(0.3)  # the stale request has long reached the handler's backlog
    finally:
        release.set()
        thread.join(wait)
    replies = [reply.payload if reply is not None else None for reply in first]
    assert replies == ["first"], f"the busy request got {replies}"
    fresh = client.request(topic, "fresh", timeout=wait)
    assert fresh is not None, "a request within its deadline was not answered"
    assert handled == ["first", "fresh"], f"the handler ran {handled}: a stale request ran"
    assert server.stats["expired_requests"] == 1
