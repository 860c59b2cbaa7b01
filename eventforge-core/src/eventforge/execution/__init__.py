"""The Executor: tasks on threads, processes or a pool, and their results (layer 6)."""

from __future__ import annotations

from eventforge.execution._executor import (
    Executor as Executor,
)
from eventforge.execution._results import (
    ExecutionMode as ExecutionMode,
)
from eventforge.execution._results import (
    TaskId as TaskId,
)
from eventforge.execution._results import (
    TaskNotFound as TaskNotFound,
)
from eventforge.execution._results import (
    TaskResult as TaskResult,
)
from eventforge.execution._results import (
    TaskStatus as TaskStatus,
)
from eventforge.execution._results import (
    UnpicklableTaskError as UnpicklableTaskError,
)

__all__ = [
    "ExecutionMode",
    "Executor",
    "TaskId",
    "TaskNotFound",
    "TaskResult",
    "TaskStatus",
    "UnpicklableTaskError",
]
