"""Requests over NATS: a call never runs after its deadline; nobody listening is counted."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.errors import NoRespondersError
from eventforge.testing.brokers import NatsServer
from eventforge.testing.deadline_checks import check_expired_request_never_reaches_a_handler
from eventforge.transports.nats import NatsTransport

pytestmark = pytest.mark.broker


@pytest.fixture
def make_queue(nats_server: NatsServer) -> Iterator[Callable[[], MessageQueue]]:
    made: list[MessageQueue] = []

    def factory(**options: Any) -> MessageQueue:
        queue = MessageQueue(transport=NatsTransport(nats_server.url, **options))
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        queue.close()


def test_request_past_its_deadline_never_reaches_a_handler(
    make_queue: Callable[[], MessageQueue],
) -> None:
    """A request that timed out in a busy handler's backlog is skipped and counted, not run."""
    topic = f"deadline.t{os.urandom(3).hex()}"
    check_expired_request_never_reaches_a_handler(make_queue(), make_queue(), topic)


def test_request_to_nobody_is_counted_in_no_responders(
    make_queue: Callable[[], MessageQueue],
) -> None:
    """NATS's native "no responders" is counted like the counted transports' one."""
    queue = make_queue()
    with pytest.raises(NoRespondersError):
        queue.request(f"nobody.t{os.urandom(3).hex()}", 1, timeout=30)
    assert queue.stats["no_responders"] == 1
