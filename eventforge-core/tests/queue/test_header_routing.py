"""Header routing: subscribe with a header match (all-of / any-of) alongside topic patterns."""

from __future__ import annotations

from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing import wait_until


@pytest.fixture
def queue() -> Any:
    q = MessageQueue()
    yield q
    q.close()


def publish_reports(queue: MessageQueue) -> None:
    queue.publish("docs.report", 1, format="pdf", type="report", author="john")
    queue.publish("docs.report", 2, format="pdf", type="invoice")
    queue.publish("docs.report", 3, format="html", type="report")
    queue.publish("docs.report", 4)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(("mode", "expected"), [("all", [1]), ("any", [1, 2, 3])])
def test_match_all_and_any(
    queue: MessageQueue, use_async: bool, mode: str, expected: list[int]
) -> None:
    got: list[int] = []
    if use_async:

        async def handler(message: Message) -> None:
            got.append(message.payload)
    else:

        def handler(message: Message) -> None:  # type: ignore[misc]
            got.append(message.payload)

    queue.subscribe("docs.*", handler, match={"format": "pdf", "type": "report"}, match_mode=mode)
    publish_reports(queue)
    assert wait_until(lambda: sorted(got) == expected, timeout=5.0)
    assert queue.stats["filtered"] == 4 - len(expected)
    assert queue.stats["delivered"] == len(expected)


def test_match_compares_typed_values(queue: MessageQueue) -> None:
    got: list[int] = []
    queue.subscribe("m", lambda m: got.append(m.payload), match={"priority": 1, "urgent": True})
    queue.publish("m", 1, priority=1, urgent=True)
    queue.publish("m", 2, priority="1", urgent=True)
    queue.publish("m", 3, priority=1, urgent=False)
    assert got == [1]


def test_match_works_with_groups_and_threaded_handlers(queue: MessageQueue) -> None:
    got: list[int] = []
    queue.subscribe("g", lambda m: got.append(m.payload), group="g1", match={"k": "v"})
    queue.subscribe("g", lambda m: got.append(m.payload), group="g1", match={"k": "v"})
    queue.subscribe("g", lambda m: got.append(-m.payload), threaded=True, match={"k": "w"})
    for n in range(4):
        queue.publish("g", n, k="v" if n % 2 == 0 else "w")
    assert wait_until(lambda: sorted(got) == [-3, -1, 0, 2], timeout=5.0)


def test_bad_match_is_refused_before_subscribing(queue: MessageQueue) -> None:
    with pytest.raises(ValueError, match="match_mode must be 'all' or 'any'"):
        queue.subscribe("t", print, match={"a": "b"}, match_mode="some")
    with pytest.raises(ValueError, match="non-empty dict"):
        queue.subscribe("t", print, match={})
    with pytest.raises(TypeError, match="header values are str"):
        queue.subscribe("t", print, match={"a": ["b"]})
    assert queue.stats["subscriptions"] == 0
