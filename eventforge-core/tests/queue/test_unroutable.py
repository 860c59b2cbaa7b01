"""Unroutable policies on the in-process transport: drop, return, reroute, callback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from eventforge import MemoryTransport, MessageQueue
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.queue._routing import REROUTED_FROM_HEADER, UnroutableError


def test_default_keeps_the_message_for_a_later_receive() -> None:
    with MessageQueue() as queue:
        queue.publish("nobody.here", 1)
        assert queue.stats["unroutable"] == 0
        message = queue.receive("nobody.here", timeout=1)
        assert message is not None
        assert message.payload == 1


def test_drop_counts() -> None:
    with MessageQueue(unroutable="drop") as queue:
        got: list[Any] = []
        queue.subscribe("some.one", lambda m: got.append(m.payload))
        queue.publish("nobody.here", 1)
        queue.publish("some.one", 2)
        assert got == [2]
        assert queue.stats["unroutable"] == 1
        assert queue.receive("nobody.here", timeout=0.01) is None


def test_return_raises_in_the_publisher() -> None:
    with MessageQueue(unroutable="return") as queue:
        with pytest.raises(
            UnroutableError, match=r"nobody is subscribed to 'nobody\.here'"
        ) as info:
            queue.publish("nobody.here", {"a": 1})
        assert info.value.message.payload == {"a": 1}
        assert queue.stats["unroutable"] == 1
        assert queue.stats["published"] == 0


def test_return_raises_from_publish_async_too() -> None:
    import asyncio

    with MessageQueue(unroutable="return") as queue:
        with pytest.raises(UnroutableError):
            asyncio.run(queue.publish_async("nobody.here", 1))


def test_reroute_to_an_alternate_topic() -> None:
    with MessageQueue(unroutable="reroute:dead.letters") as queue:
        parked: list[Message] = []
        queue.subscribe("dead.letters", parked.append)
        queue.publish("nobody.here", 5, k="v")
        assert [m.payload for m in parked] == [5]
        assert parked[0].headers == {"k": "v", REROUTED_FROM_HEADER: "nobody.here"}
        assert queue.stats["unroutable"] == 1


def test_callback_policy() -> None:
    returned: list[Message] = []
    with MessageQueue(unroutable=returned.append) as queue:
        queue.publish("nobody.here", 1)
        assert [m.topic for m in returned] == ["nobody.here"]


def test_a_waiting_receive_counts_as_a_receiver() -> None:
    import threading

    with MessageQueue(unroutable="return") as queue:
        result: list[Message | None] = []
        thread = threading.Thread(target=lambda: result.append(queue.receive("r", timeout=5)))
        thread.start()
        while not queue.transport.stats()["subscriptions"]:
            threading.Event().wait(0.001)
        queue.publish("r", 1)
        thread.join()
        assert result[0] is not None
        assert result[0].payload == 1


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unroutable policy must be"):
        MessageQueue(unroutable="bounce")
    with pytest.raises(ConfigurationError, match="reroute:"):
        MessageQueue(unroutable="reroute:bad topic")


class UncountedTransport(MemoryTransport):
    """A transport that cannot count receivers (as most network transports)."""

    send_counted = None  # type: ignore[assignment]


def test_a_transport_that_cannot_count_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eventforge.routing"):
        queue = MessageQueue(UncountedTransport(), unroutable="return")
    try:
        assert "cannot tell whether anyone received" in caplog.text
        queue.publish("nobody.here", 1)  # no error: the policy cannot apply
        assert queue.stats["unroutable"] == 0
    finally:
        queue.close()
