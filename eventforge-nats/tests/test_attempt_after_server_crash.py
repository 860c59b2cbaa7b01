"""What the attempt number says after a JetStream server crash (documented in nats.md).

JetStream writes a consumer's delivery counts to disk lazily, so items fetched just before the
server is SIGKILLed may come back with attempt 1 again. The test proves what the docs promise
(none of them is lost: each is delivered again, as attempt 1 or 2, with its header set) and
prints how many came back as attempt 1; it does not assert that number, which depends on when
the server last wrote its state.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing.brokers import NatsServer
from eventforge.workqueue._api import ATTEMPT_HEADER, RetryPolicy, WorkQueue
from eventforge_nats.transport import NatsTransport

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ITEMS = 200
STALL_S = 30.0


def test_items_fetched_before_a_server_crash_all_come_back_with_their_attempt_header(
    nats_server_factory: Any,
) -> None:
    server: NatsServer = nats_server_factory()
    transport = NatsTransport(server.url, ack_wait=5.0)
    queue = WorkQueue("crash-attempts", transport, retry=RetryPolicy(max_attempts=10))
    try:
        queue.backend.put_many([Message("crash-attempts", n) for n in range(ITEMS)])
        before: list[int] = []
        deadline = time.monotonic() + STALL_S
        while len(before) < ITEMS:
            assert time.monotonic() < deadline, f"stalled: fetched {len(before)}"
            delivery = queue.get(timeout=2)  # never settled: the server dies first
            if delivery is not None:
                assert delivery.attempt == 1
                before.append(delivery.message.payload)
        server.kill()
        server.restart()
        after: dict[int, int] = {}
        deadline = time.monotonic() + STALL_S
        while len(after) < ITEMS:
            assert time.monotonic() < deadline, f"stalled: {len(after)} of {ITEMS} redelivered"
            delivery = queue.get(timeout=2)
            if delivery is None:
                continue
            assert delivery.message.headers[ATTEMPT_HEADER] == delivery.attempt
            after.setdefault(delivery.message.payload, delivery.attempt)
            delivery.ack()
        attempts = Counter(after.values())
        print(
            f"N-JS server SIGKILL with {ITEMS} items fetched, unsettled: lost=0 "
            f"redelivered_as_attempt_1={attempts[1]} as_attempt_2={attempts[2]}"
        )
        assert sorted(after) == sorted(before) == list(range(ITEMS))
        assert set(attempts) <= {1, 2}
    finally:
        queue.close()
        transport.close()
