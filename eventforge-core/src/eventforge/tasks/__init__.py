"""@task, task contexts, runners and pools (layer 9)."""

from __future__ import annotations

from eventforge.tasks._tasks import (
    CALL_HEADER as CALL_HEADER,
)
from eventforge.tasks._tasks import (
    SharedState as SharedState,
)
from eventforge.tasks._tasks import (
    Task as Task,
)
from eventforge.tasks._tasks import (
    TaskContext as TaskContext,
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
    "SharedState",
    "Task",
    "TaskContext",
    "TaskPool",
    "TaskPoolTimeout",
    "task",
]
