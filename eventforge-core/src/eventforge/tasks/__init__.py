"""@task, task contexts, runners and pools, and the results tasks keep (layer 9)."""

from __future__ import annotations

from eventforge.tasks._context import (
    CALL_HEADER as CALL_HEADER,
)
from eventforge.tasks._context import (
    RESULT_HEADER as RESULT_HEADER,
)
from eventforge.tasks._context import (
    TaskContext as TaskContext,
)
from eventforge.tasks._results import (
    send_task as send_task,
)
from eventforge.tasks._results import (
    send_task_async as send_task_async,
)
from eventforge.tasks._tasks import (
    SharedState as SharedState,
)
from eventforge.tasks._tasks import (
    Task as Task,
)
from eventforge.tasks._tasks import (
    TaskPool as TaskPool,
)
from eventforge.tasks._tasks import (
    TaskPoolTimeout as TaskPoolTimeout,
)
from eventforge.tasks._tasks import (
    task as task,
)

__all__ = [
    "CALL_HEADER",
    "RESULT_HEADER",
    "SharedState",
    "Task",
    "TaskContext",
    "TaskPool",
    "TaskPoolTimeout",
    "send_task",
    "send_task_async",
    "task",
]
