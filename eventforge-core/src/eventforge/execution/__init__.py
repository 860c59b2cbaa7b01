"""The Executor: tasks on threads, processes or a pool, and their results (layer 6).

Also the results a task keeps in a result store: :class:`ResultHandle`, :class:`ResultStatus`,
:class:`TaskRecord` and the functions that write them.
"""

from __future__ import annotations

from eventforge.execution._executor import (
    Executor as Executor,
)
from eventforge.execution._handle import (
    ResultHandle as ResultHandle,
)
from eventforge.execution._handle import (
    resolve_result_store as resolve_result_store,
)
from eventforge.execution._records import (
    DEFAULT_RESULT_TTL as DEFAULT_RESULT_TTL,
)
from eventforge.execution._records import (
    ResultStatus as ResultStatus,
)
from eventforge.execution._records import (
    TaskRecord as TaskRecord,
)
from eventforge.execution._records import (
    decode_record as decode_record,
)
from eventforge.execution._records import (
    encode_record as encode_record,
)
from eventforge.execution._records import (
    record_outcome as record_outcome,
)
from eventforge.execution._records import (
    record_status as record_status,
)
from eventforge.execution._records import (
    worker_name as worker_name,
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
    "DEFAULT_RESULT_TTL",
    "ExecutionMode",
    "Executor",
    "ResultHandle",
    "ResultStatus",
    "TaskId",
    "TaskNotFound",
    "TaskRecord",
    "TaskResult",
    "TaskStatus",
    "UnpicklableTaskError",
    "decode_record",
    "encode_record",
    "record_outcome",
    "record_status",
    "resolve_result_store",
    "worker_name",
]
