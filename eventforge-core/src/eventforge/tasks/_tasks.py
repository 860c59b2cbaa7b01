"""``@task``: one callable that runs the same way whether it is called or triggered by a message.

The lifecycle of every invocation, direct call or queue trigger alike:

1. take a slot of the :class:`TaskPool` (when ``max_instances`` is set; waits up to
   ``instance_timeout``, then fails with :class:`TaskPoolTimeout`);
2. run the body between the ``on_execute`` observers' ``before`` and ``after``/``on_error``,
   inline or through ``executor=`` (an :class:`~eventforge.execution.Executor`);
3. call ``on_success`` or ``on_failure`` with the :class:`TaskContext`;
4. publish the result to ``{topic}.success`` or a failure record to ``{topic}.failure`` (only
   with a ``queue`` and ``publish_result=True``);
5. call ``on_complete``.

A direct call returns the value, or re-raises the task's exception after step 5. A message on
``topic`` calls the task with its payload as the single argument, whatever its type (a dict or
list arrives as one dict or list); to pass several arguments, publish with ``my_task.publish(*args,
**kwargs)``, which marks the message so that the trigger unpacks ``{"args": [...], "kwargs": {...}}``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from eventforge.dispatch.observing import _flatten, call_observed, call_observed_async
from eventforge.execution import ExecutionMode, Executor, UnpicklableTaskError
from eventforge.message import Message, new_id
from eventforge.queue import MessageQueue
from eventforge.tasks._support import SharedState, TaskPool, TaskPoolTimeout
from eventforge.topics import has_wildcards
from eventforge.transport import ATTEMPT_HEADER, run_sync

__all__ = [
    "CALL_HEADER",
    "SharedState",
    "Task",
    "TaskContext",
    "TaskPool",
    "TaskPoolTimeout",
    "task",
]

log = logging.getLogger("eventforge.tasks")

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class Task(Protocol[P, R_co]):
    """What ``@task`` makes of a function: callable as before, plus the task's handles."""

    task_name: str
    topic: str
    queue: MessageQueue | None
    executor: Executor | None
    state: SharedState
    pool: TaskPool | None
    handler_id: str | None
    subscription_id: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def publish(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Trigger the task through its queue with these arguments; return the message id."""
        ...

    def unsubscribe(self) -> bool:
        """Stop triggering the task from its queue; return whether it was subscribed."""
        ...


Callback = Callable[["TaskContext"], Any]

CALL_HEADER = "x-eventforge-call"
"""A message header: the payload is ``{"args": [...], "kwargs": {...}}`` to unpack."""


class TaskContext:
    """Everything known about one invocation; handed to the ``on_*`` callbacks.

    ``trigger`` is ``"call"`` or ``"queue"``; ``message`` and ``attempt`` are set only when a
    message triggered the invocation. ``execution_time`` covers the body (seconds).
    """

    __slots__ = (
        "args",
        "attempt",
        "error",
        "execution_time",
        "kwargs",
        "message",
        "result",
        "started_at",
        "state",
        "task_id",
        "task_name",
        "topic",
        "trigger",
    )

    def __init__(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        topic: str,
        state: SharedState,
        message: Message | None = None,
    ) -> None:
        self.task_name = task_name
        self.task_id = new_id()
        self.args = args
        self.kwargs = kwargs
        self.topic = topic
        self.state = state
        self.message = message
        self.trigger = "queue" if message is not None else "call"
        self.attempt: int | None = (
            None if message is None else int(message.headers.get(ATTEMPT_HEADER, 1))
        )
        self.started_at = time.time()
        self.result: Any = None
        self.error: BaseException | None = None
        self.execution_time = 0.0

    @property
    def succeeded(self) -> bool:
        """True when the body returned."""
        return self.error is None

    def __repr__(self) -> str:
        outcome = f"result={self.result!r}" if self.error is None else f"error={self.error!r}"
        return f"TaskContext({self.task_name!r}, {self.trigger}, {outcome})"


class _BodyRef:
    """A picklable reference to a module-level task body, for PROCESS executors.

    The decorated name in the module is the task wrapper, so the body itself does not pickle by
    reference; the worker process looks the wrapper up and calls what it wraps.
    """

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        result = getattr(target, "__wrapped__", target)(*args, **kwargs)
        if inspect.iscoroutine(result):  # an ``async def`` task: run it in this worker
            return asyncio.run(result)
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_BodyRef, (self.module, self.qualname))


def _callbacks(value: Callback | Sequence[Callback] | None) -> tuple[Callback, ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    return tuple(value)


class _TaskRunner:
    """The lifecycle shared by the sync and async wrappers and by the queue trigger."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        queue: MessageQueue | None,
        topic: str | None,
        executor: Executor | None,
        observers: Sequence[Any],
        on_success: tuple[Callback, ...],
        on_failure: tuple[Callback, ...],
        on_complete: tuple[Callback, ...],
        publish_result: bool,
        pool: TaskPool | None,
    ) -> None:
        self.func = func
        self.name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        self.queue = queue
        self.topic = topic or func.__name__
        self.executor = executor
        self.observers = tuple(observers)
        self.on_success = on_success
        self.on_failure = on_failure
        self.on_complete = on_complete
        self.publish_result = publish_result and queue is not None
        self.pool = pool
        self.state = SharedState()
        self.target: Callable[..., Any] = func
        if executor is not None and executor.mode is ExecutionMode.PROCESS:
            if "<locals>" in self.name:
                raise UnpicklableTaskError(func, TypeError("a nested function does not pickle"))
            self.target = _BodyRef(func.__module__, func.__qualname__)

    # -- the body ---------------------------------------------------------------------------

    def _body(self, *args: Any, **kwargs: Any) -> Any:
        executor = self.executor
        if executor is None:
            return self.func(*args, **kwargs)
        return executor.result(executor.submit(self.target, *args, **kwargs)).unwrap()

    async def _body_async(self, *args: Any, **kwargs: Any) -> Any:
        executor = self.executor
        if executor is None:
            return await self.func(*args, **kwargs)
        task_id = await executor.submit_async(self.target, *args, **kwargs)
        return (await executor.result_async(task_id)).unwrap()

    # -- the lifecycle ----------------------------------------------------------------------

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any], message: Message | None) -> Any:
        ctx = TaskContext(
            self.name, args, kwargs, topic=self.topic, state=self.state, message=message
        )
        pool = self.pool
        start = 0.0
        try:
            if pool is not None:
                pool.acquire()
            start = time.perf_counter()
            try:
                if self.observers:
                    result, event = call_observed(
                        self.observers, self._body, args, kwargs, name=self.name
                    )
                    elapsed = event.elapsed
                else:
                    result = self._body(*args, **kwargs)
                    elapsed = time.perf_counter() - start
            finally:
                if pool is not None:
                    pool.release()
        except TaskPoolTimeout as exc:
            ctx.error = exc
            self._finish(ctx)
            raise
        except Exception as exc:
            ctx.error = exc
            ctx.execution_time = time.perf_counter() - start
            self._finish(ctx)
            raise
        ctx.result = result
        ctx.execution_time = elapsed
        self._finish(ctx)
        return result

    async def run_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], message: Message | None
    ) -> Any:
        ctx = TaskContext(
            self.name, args, kwargs, topic=self.topic, state=self.state, message=message
        )
        pool = self.pool
        start = 0.0
        try:
            if pool is not None:
                await pool.acquire_async()
            start = time.perf_counter()
            try:
                if self.observers:
                    result, event = await call_observed_async(
                        self.observers, self._body_async, args, kwargs, name=self.name
                    )
                    elapsed = event.elapsed
                else:
                    result = await self._body_async(*args, **kwargs)
                    elapsed = time.perf_counter() - start
            finally:
                if pool is not None:
                    pool.release()
        except TaskPoolTimeout as exc:
            ctx.error = exc
            await self._finish_async(ctx)
            raise
        except Exception as exc:
            ctx.error = exc
            ctx.execution_time = time.perf_counter() - start
            await self._finish_async(ctx)
            raise
        ctx.result = result
        ctx.execution_time = elapsed
        await self._finish_async(ctx)
        return result

    def _finish(self, ctx: TaskContext) -> None:
        for callback in self.on_success if ctx.error is None else self.on_failure:
            self._call_back(callback, ctx)
        if self.publish_result:
            self._publish(ctx)
        for callback in self.on_complete:
            self._call_back(callback, ctx)

    async def _finish_async(self, ctx: TaskContext) -> None:
        for callback in self.on_success if ctx.error is None else self.on_failure:
            await self._call_back_async(callback, ctx)
        if self.publish_result:
            await self._publish_async(ctx)
        for callback in self.on_complete:
            await self._call_back_async(callback, ctx)

    def _call_back(self, callback: Callback, ctx: TaskContext) -> None:
        try:
            outcome = callback(ctx)
            if inspect.isawaitable(outcome):
                run_sync(outcome)
        except Exception:
            log.exception("task %r: callback %r raised", self.name, callback)

    async def _call_back_async(self, callback: Callback, ctx: TaskContext) -> None:
        try:
            outcome = callback(ctx)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("task %r: callback %r raised", self.name, callback)

    def _outcome(self, ctx: TaskContext) -> tuple[str, Any, dict[str, Any]] | None:
        """The topic, payload and headers that report ``ctx``; ``None`` when there is no topic."""
        base = ctx.message.topic if ctx.message is not None else self.topic
        if has_wildcards(base):
            return None  # a direct call of a task subscribed to a pattern has no concrete topic
        headers: dict[str, Any] = {"task": self.name, "task_id": ctx.task_id}
        if ctx.message is not None:
            headers["source_id"] = ctx.message.id
        if ctx.error is None:
            return f"{base}.success", ctx.result, headers
        failure = {
            "task": self.name,
            "error_type": type(ctx.error).__name__,
            "error": str(ctx.error),
        }
        return f"{base}.failure", failure, headers

    def _publish(self, ctx: TaskContext) -> None:
        assert self.queue is not None
        outcome = self._outcome(ctx)
        if outcome is None:
            return
        topic, payload, headers = outcome
        try:
            self.queue.publish(topic, payload, **headers)
        except Exception:
            log.exception("task %r: publishing its outcome to %r failed", self.name, topic)

    async def _publish_async(self, ctx: TaskContext) -> None:
        """Like :meth:`_publish`, without blocking the running loop on a network send."""
        assert self.queue is not None
        outcome = self._outcome(ctx)
        if outcome is None:
            return
        topic, payload, headers = outcome
        try:
            await self.queue.publish_async(topic, payload, **headers)
        except Exception:
            log.exception("task %r: publishing its outcome to %r failed", self.name, topic)

    # -- the queue trigger ------------------------------------------------------------------

    @staticmethod
    def arguments(message: Message) -> tuple[tuple[Any, ...], dict[str, Any]]:
        payload = message.payload
        if message.headers.get(CALL_HEADER) and isinstance(payload, dict):
            return tuple(payload.get("args") or ()), dict(payload.get("kwargs") or {})
        return (payload,), {}

    def on_message(self, message: Message) -> None:
        args, kwargs = self.arguments(message)
        self.run(args, kwargs, message)

    async def on_message_async(self, message: Message) -> None:
        args, kwargs = self.arguments(message)
        await self.run_async(args, kwargs, message)


def task(
    queue: MessageQueue | None = None,
    topic: str | None = None,
    executor: Executor | None = None,
    on_execute: Sequence[Any] | None = None,
    on_success: Callback | Sequence[Callback] | None = None,
    on_failure: Callback | Sequence[Callback] | None = None,
    on_complete: Callback | Sequence[Callback] | None = None,
    publish_result: bool = True,
    max_instances: int | None = None,
    instance_timeout: float | None = None,
) -> Callable[[Callable[P, R_co]], Task[P, R_co]]:
    """Make a function (plain or ``async def``) a task: observed, called back, queue-triggered.

    With ``queue``, the task subscribes ``topic`` (default: the function's name) and every
    message runs it; ``publish_result`` then publishes outcomes to ``{topic}.success`` /
    ``{topic}.failure``. ``executor`` picks where the body runs (default: inline).
    ``max_instances`` caps concurrent executions (``.pool``), ``instance_timeout`` bounds the
    wait for a slot. ``.state`` is a :class:`SharedState` shared by all invocations.

    The queue subscription's id is ``.handler_id`` (``None`` without a queue);
    ``.unsubscribe()`` removes the subscription (the same as
    ``queue.unsubscribe(my_task.handler_id)``), after which only direct calls run the task.
    """

    def decorate(func: Callable[P, R_co]) -> Task[P, R_co]:
        pool = None
        name = getattr(func, "__qualname__", repr(func))
        if max_instances is not None:
            pool = TaskPool(max_instances, instance_timeout, name=name)
        runner = _TaskRunner(
            func,
            queue=queue,
            topic=topic,
            executor=executor,
            observers=tuple(_flatten(on_execute or ())),
            on_success=_callbacks(on_success),
            on_failure=_callbacks(on_failure),
            on_complete=_callbacks(on_complete),
            publish_result=publish_result,
            pool=pool,
        )
        wrapper: Any
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await runner.run_async(args, kwargs, None)

            wrapper = async_wrapper
            handler: Callable[[Message], Any] = runner.on_message_async
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return runner.run(args, kwargs, None)

            wrapper = sync_wrapper
            handler = runner.on_message

        def publish(*args: Any, **kwargs: Any) -> str:
            """Trigger the task through its queue with these arguments; return the message id."""
            if queue is None:
                raise ValueError(f"task {name!r} has no queue; pass queue= to @task")
            if has_wildcards(runner.topic):
                raise ValueError(
                    f"task {name!r} subscribes the pattern {runner.topic!r}; publish to a "
                    "concrete topic with queue.publish instead"
                )
            payload = {"args": list(args), "kwargs": kwargs}
            return queue.publish(runner.topic, payload, **{CALL_HEADER: True})

        wrapper.__eventforge_task__ = True
        wrapper.task_name = name
        wrapper.topic = runner.topic
        wrapper.queue = queue
        wrapper.executor = executor
        wrapper.observers = runner.observers
        wrapper.state = runner.state
        wrapper.pool = pool
        handler_id = queue.subscribe(runner.topic, handler) if queue else None

        def unsubscribe() -> bool:
            """Stop triggering the task from its queue; return whether it was subscribed.

            The task stays callable directly (and ``publish`` still publishes, though nothing
            in this process runs it any more). Idempotent: a second call returns False.
            """
            if queue is None or wrapper.handler_id is None:
                return False
            current, wrapper.handler_id = wrapper.handler_id, None
            wrapper.subscription_id = None
            return queue.unsubscribe(current)

        wrapper.publish = publish
        wrapper.unsubscribe = unsubscribe
        # ``handler_id`` as for ``@queue.on``; ``subscription_id`` is the older name of it.
        wrapper.handler_id = handler_id
        wrapper.subscription_id = handler_id
        return cast("Task[P, R_co]", wrapper)

    return decorate
