"""A poison pill that kills its consumer process, on Redis Streams (fault row 24).

The handler calls ``os._exit`` on one item, so its consumer process dies holding it; a new
consumer process takes over after each death, started by a supervisor process
(``_poison_supervisor.py``). A restarted consumer takes
over the dead one's entries (``XAUTOCLAIM``) before it reads new ones, so without a cap on
unsettled redeliveries the poison killed every consumer first and no other item was handled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eventforge.testing.brokers import RedisServer
from eventforge.workqueue import RetryPolicy, WorkQueue

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SUPERVISOR = str(Path(__file__).with_name("_poison_supervisor.py"))
MAX_ATTEMPTS = 3
GOOD_ITEMS = 50
WATCHDOG_S = 60.0  # fails only when the queue is stuck; no timing is asserted


def test_poison_that_kills_its_consumer_is_dead_lettered_and_the_rest_flows(
    redis_server: RedisServer,
) -> None:
    """The poison reaches a handler exactly ``max_attempts`` times, then is dead-lettered with
    the "delivered N times without being settled" reason; all good items are handled."""
    from eventforge_redis import RedisTransport

    name = f"poison-{os.urandom(4).hex()}"
    transport = RedisTransport.from_url(redis_server.url, claim_idle=0.5, block=0.2)
    policy = RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_backoff=0.05, max_backoff=0.2)
    queue = WorkQueue(name, transport, retry=policy)
    client = transport.client
    effects = f"effects:{name}"
    queue.put("poison")  # first in line: the first consumer takes it first
    queue.put_many(list(range(GOOD_ITEMS)))

    def handled() -> list[str]:
        return [raw.decode() for raw in client.lrange(effects, 0, -1)]

    supervisor = subprocess.Popen(
        [sys.executable, SUPERVISOR, redis_server.url, name, str(MAX_ATTEMPTS)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its consumer processes share its process group
    )
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().strip() == "ready"
        started = time.monotonic()
        while True:
            seen = handled()
            poison_deliveries = seen.count("poison")
            assert poison_deliveries <= MAX_ATTEMPTS, (
                f"the poison reached a handler {poison_deliveries} times (max_attempts="
                f"{MAX_ATTEMPTS}); good items handled: {len(set(seen) - {'poison'})}"
            )
            if queue.dead_letters() and len(set(seen) - {"poison"}) == GOOD_ITEMS:
                break
            assert supervisor.poll() is None, "the supervisor died"
            assert time.monotonic() - started < WATCHDOG_S, (
                f"stalled: {len(set(seen) - {'poison'})} of {GOOD_ITEMS} good items handled, "
                f"poison delivered {poison_deliveries} times"
            )
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)  # the supervisor and its consumer
        supervisor.wait(10)
    starts = int(client.get(f"starts:{name}") or 0)
    seen = handled()
    good = [item for item in seen if item != "poison"]
    letters = queue.dead_letters()
    print(
        f"R-ST poison pill (os._exit): poison_deliveries={seen.count('poison')} "
        f"dlq_count={len(letters)} good_handled={len(set(good))}/{GOOD_ITEMS} "
        f"good_duplicates={len(good) - len(set(good))} consumers_started={starts} "
        f"time_s={elapsed:.1f}"
    )
    queue.close()
    transport.close()
    assert seen.count("poison") == MAX_ATTEMPTS
    assert sorted(set(good), key=int) == [str(n) for n in range(GOOD_ITEMS)]
    assert len(letters) == 1
    letter = letters[0]
    assert letter.message.payload == "poison"
    assert letter.attempts == MAX_ATTEMPTS + 1
    assert letter.reason == (
        f"delivered {MAX_ATTEMPTS + 1} times without being settled (max_attempts="
        f"{MAX_ATTEMPTS}): its consumers crashed or exceeded the visibility timeout (claim_idle)"
    )
