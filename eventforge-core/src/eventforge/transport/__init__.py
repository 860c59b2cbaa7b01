"""The transport contract and the kit every transport is built with (layer 1)."""

from __future__ import annotations

from eventforge.transport._base import (
    BackgroundLoop as BackgroundLoop,
)
from eventforge.transport._base import (
    Backoff as Backoff,
)
from eventforge.transport._base import (
    BatchDeliveryThread as BatchDeliveryThread,
)
from eventforge.transport._base import (
    BoundLoop as BoundLoop,
)
from eventforge.transport._base import (
    Callback as Callback,
)
from eventforge.transport._base import (
    Capability as Capability,
)
from eventforge.transport._base import (
    Counter as Counter,
)
from eventforge.transport._base import (
    DeliveryThread as DeliveryThread,
)
from eventforge.transport._base import (
    Option as Option,
)
from eventforge.transport._base import (
    OptionTable as OptionTable,
)
from eventforge.transport._base import (
    Supervisor as Supervisor,
)
from eventforge.transport._base import (
    SupervisorFailed as SupervisorFailed,
)
from eventforge.transport._base import (
    ThreadSupervisor as ThreadSupervisor,
)
from eventforge.transport._base import (
    Transport as Transport,
)
from eventforge.transport._base import (
    Waiter as Waiter,
)
from eventforge.transport._base import (
    background_loop as background_loop,
)
from eventforge.transport._base import (
    is_native as is_native,
)
from eventforge.transport._base import (
    is_nonblocking as is_nonblocking,
)
from eventforge.transport._base import (
    nonblocking as nonblocking,
)
from eventforge.transport._base import (
    require_capability as require_capability,
)
from eventforge.transport._base import (
    to_bool as to_bool,
)
from eventforge.transport._base import (
    to_float as to_float,
)
from eventforge.transport._base import (
    to_int as to_int,
)
from eventforge.transport._base import (
    to_seconds as to_seconds,
)
from eventforge.transport._builtin_capabilities import (
    LOCAL_CAPABILITIES as LOCAL_CAPABILITIES,
)
from eventforge.transport._builtin_capabilities import (
    MEMORY_CAPABILITIES as MEMORY_CAPABILITIES,
)
from eventforge.transport._builtin_capabilities import (
    ROUNDTRIP_CAPABILITIES as ROUNDTRIP_CAPABILITIES,
)
from eventforge.transport._loop import LoopHost as LoopHost
from eventforge.transport._loop import run_sync as run_sync
from eventforge.transport._results import (
    ResultStore as ResultStore,
)
from eventforge.transport._results import (
    StoredResult as StoredResult,
)
from eventforge.transport._results import (
    check_result_ttl as check_result_ttl,
)
from eventforge.transport._results import (
    check_task_id as check_task_id,
)
from eventforge.transport._status import SubscriptionStatus as SubscriptionStatus
from eventforge.transport._workqueue import (
    ATTEMPT_HEADER as ATTEMPT_HEADER,
)
from eventforge.transport._workqueue import (
    DEAD_LETTER_REASON_HEADER as DEAD_LETTER_REASON_HEADER,
)
from eventforge.transport._workqueue import (
    MALFORMED_HEADER as MALFORMED_HEADER,
)
from eventforge.transport._workqueue import (
    NOT_BEFORE_HEADER as NOT_BEFORE_HEADER,
)
from eventforge.transport._workqueue import (
    WORK_QUEUE_STATS as WORK_QUEUE_STATS,
)
from eventforge.transport._workqueue import (
    DeadLetter as DeadLetter,
)
from eventforge.transport._workqueue import (
    Delivery as Delivery,
)
from eventforge.transport._workqueue import (
    RetryPolicy as RetryPolicy,
)
from eventforge.transport._workqueue import (
    WorkQueueBackend as WorkQueueBackend,
)
from eventforge.transport._workqueue import (
    for_replay as for_replay,
)
from eventforge.transport._workqueue import (
    malformed_item as malformed_item,
)

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "LOCAL_CAPABILITIES",
    "MALFORMED_HEADER",
    "MEMORY_CAPABILITIES",
    "NOT_BEFORE_HEADER",
    "ROUNDTRIP_CAPABILITIES",
    "WORK_QUEUE_STATS",
    "BackgroundLoop",
    "Backoff",
    "BatchDeliveryThread",
    "BoundLoop",
    "Callback",
    "Capability",
    "Counter",
    "DeadLetter",
    "Delivery",
    "DeliveryThread",
    "LoopHost",
    "Option",
    "OptionTable",
    "ResultStore",
    "RetryPolicy",
    "StoredResult",
    "SubscriptionStatus",
    "Supervisor",
    "SupervisorFailed",
    "ThreadSupervisor",
    "Transport",
    "Waiter",
    "WorkQueueBackend",
    "background_loop",
    "check_result_ttl",
    "check_task_id",
    "for_replay",
    "is_native",
    "is_nonblocking",
    "malformed_item",
    "nonblocking",
    "require_capability",
    "run_sync",
    "to_bool",
    "to_float",
    "to_int",
    "to_seconds",
]
