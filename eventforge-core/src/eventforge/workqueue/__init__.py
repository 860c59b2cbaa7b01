"""Work queues: WorkQueue, Consumer, the retry gate and durable events (layer 6)."""

from __future__ import annotations

from eventforge.workqueue._api import ATTEMPT_HEADER as ATTEMPT_HEADER
from eventforge.workqueue._api import (
    Consumer as Consumer,
)
from eventforge.workqueue._api import (
    DeadLetter as DeadLetter,
)
from eventforge.workqueue._api import (
    Delivery as Delivery,
)
from eventforge.workqueue._api import (
    RetryPolicy as RetryPolicy,
)
from eventforge.workqueue._api import (
    WorkQueue as WorkQueue,
)
from eventforge.workqueue._api import (
    WorkQueueBackend as WorkQueueBackend,
)
from eventforge.workqueue._events import (
    EventConsumer as EventConsumer,
)
from eventforge.workqueue._events import (
    consume_events as consume_events,
)
from eventforge.workqueue._events import (
    event_work_queue as event_work_queue,
)
from eventforge.workqueue._events import (
    put_event as put_event,
)

__all__ = [
    "ATTEMPT_HEADER",
    "Consumer",
    "DeadLetter",
    "Delivery",
    "EventConsumer",
    "RetryPolicy",
    "WorkQueue",
    "WorkQueueBackend",
    "consume_events",
    "event_work_queue",
    "put_event",
]
