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

With ``results=``, an invocation sent with ``my_task.send(...)`` also keeps its status and
outcome in a result store (:mod:`eventforge.tasks._results`): stored before step 3.

A direct call returns the value, or re-raises the task's exception after step 5. A message on
``topic`` calls the task with its payload as the single argument, whatever its type (a dict or
list arrives as one dict or list); to pass several arguments, publish with ``my_task.publish(*args,
**kwargs)``, which marks the message so that the trigger unpacks ``{"args": [...], "kwargs": {...}}``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from eventforge.dispatch.observing import _flatten, call_observed, call_observed_async
from eventforge.execution import (
    DEFAULT_RESULT_TTL,
    ExecutionMode,
    Executor,
    ResultHandle,
    UnpicklableTaskError,
    resolve_result_store,
)
from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.tasks._context import CALL_HEADER, BodyRef, Callback, TaskContext, callbacks
from eventforge.tasks._results import ResultKeeper, send_task, send_task_async
from eventforge.tasks._support import SharedState, TaskPool, TaskPoolTimeout
from eventforge.topics import has_wildcards
from eventforge.transport import ResultStore, run_sync

__all__ = ["SharedState", "Task", "TaskPool", "TaskPoolTimeout", "task"]

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
    results: ResultStore | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def publish(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Trigger the task through its queue with these arguments; return the message id."""
        ...

    def send(self, *args: P.args, **kwargs: P.kwargs) -> ResultHandle[Any]:
        """Trigger the task through its queue and return the handle of its stored result."""
        ...

    async def send_async(self, *args: P.args, **kwargs: P.kwargs) -> ResultHandle[Any]:
        """:meth:`send` without blocking the running event loop."""
        ...

    def result(self, task_id: str) -> ResultHandle[Any]:
        """The handle of the stored result of ``task_id`` (sent by any process)."""
        ...

    def unsubscribe(self) -> bool:
        """Stop triggering the task from its queue; return whether it was subscribed."""
        ...


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
        keeper: ResultKeeper | None = None,
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
        self.keeper = keeper
        self.state = SharedState()
        self.target: Callable[..., Any] = func
        if executor is not None and executor.mode is ExecutionMode.PROCESS:
            if "<locals>" in self.name:
                raise UnpicklableTaskError(func, TypeError("a nested function does not pickle"))
            self.target = BodyRef(func.__module__, func.__qualname__)

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
        keeper = self.keeper
        keep = keeper is not None and keeper.claim(ctx)
        pool = self.pool
        start = 0.0
        try:
            if pool is not None:
                pool.acquire()
            if keep and keeper is not None:
                keeper.running(ctx)
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
            self._finish(ctx, keep)
            raise
        except Exception as exc:
            ctx.error = exc
            ctx.execution_time = time.perf_counter() - start
            self._finish(ctx, keep)
            raise
        ctx.result = result
        ctx.execution_time = elapsed
        self._finish(ctx, keep)
        return result

    async def run_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], message: Message | None
    ) -> Any:
        ctx = TaskContext(
            self.name, args, kwargs, topic=self.topic, state=self.state, message=message
        )
        keeper = self.keeper
        keep = keeper is not None and keeper.claim(ctx)
        pool = self.pool
        start = 0.0
        try:
            if pool is not None:
                await pool.acquire_async()
            if keep and keeper is not None:
                await keeper.running_async(ctx)
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
            await self._finish_async(ctx, keep)
            raise
        except Exception as exc:
            ctx.error = exc
            ctx.execution_time = time.perf_counter() - start
            await self._finish_async(ctx, keep)
            raise
        ctx.result = result
        ctx.execution_time = elapsed
        await self._finish_async(ctx, keep)
        return result

    def _finish(self, ctx: TaskContext, keep: bool = False) -> None:
        if keep and self.keeper is not None:
            self.keeper.outcome(ctx)
        for callback in self.on_success if ctx.error is None else self.on_failure:
            self._call_back(callback, ctx)
        if self.publish_result:
            self._publish(ctx)
        for callback in self.on_complete:
            self._call_back(callback, ctx)

    async def _finish_async(self, ctx: TaskContext, keep: bool = False) -> None:
        if keep and self.keeper is not None:
            await self.keeper.outcome_async(ctx)
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
    results: bool | str | ResultStore | None = None,
    result_ttl: float = DEFAULT_RESULT_TTL,
) -> Callable[[Callable[P, R_co]], Task[P, R_co]]:
    """Make a function (plain or ``async def``) a task: observed, called back, queue-triggered.

    With ``queue``, the task subscribes ``topic`` (default: the function's name) and every
    message runs it; ``publish_result`` then publishes outcomes to ``{topic}.success`` /
    ``{topic}.failure``. ``executor`` picks where the body runs (default: inline).
    ``max_instances`` caps concurrent executions (``.pool``), ``instance_timeout`` bounds the
    wait for a slot. ``.state`` is a :class:`SharedState` shared by all invocations.

    ``results`` keeps the status and outcome of every invocation sent with ``.send(...)`` in a
    result store, for ``result_ttl`` seconds after its last write: ``True`` uses the queue's
    transport (``redis``, ``nats``, ``sql``, ``local`` or ``memory``), a URL or a
    :class:`~eventforge.transport.ResultStore` names another. ``.send`` returns a
    :class:`~eventforge.execution.ResultHandle`; ``.result(task_id)`` makes one from an id.

    The queue subscription's id is ``.handler_id`` (``None`` without a queue);
    ``.unsubscribe()`` removes the subscription (the same as
    ``queue.unsubscribe(my_task.handler_id)``), after which only direct calls run the task.
    """

    def decorate(func: Callable[P, R_co]) -> Task[P, R_co]:
        pool = None
        name = getattr(func, "__qualname__", repr(func))
        if max_instances is not None:
            pool = TaskPool(max_instances, instance_timeout, name=name)
        store = resolve_result_store(results, queue.transport if queue else None)
        keeper = None if store is None else ResultKeeper(name, store, result_ttl)
        runner = _TaskRunner(
            func,
            queue=queue,
            topic=topic,
            executor=executor,
            observers=tuple(_flatten(on_execute or ())),
            on_success=callbacks(on_success),
            on_failure=callbacks(on_failure),
            on_complete=callbacks(on_complete),
            publish_result=publish_result,
            pool=pool,
            keeper=keeper,
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
        wrapper.results = store
        wrapper.send, wrapper.send_async, wrapper.result = _senders(
            name, runner.topic, queue, keeper
        )
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


def _senders(
    name: str, topic: str, queue: MessageQueue | None, keeper: ResultKeeper | None
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[str], ResultHandle[Any]]]:
    """The ``send``, ``send_async`` and ``result`` of a task."""

    def check() -> tuple[MessageQueue, ResultKeeper]:
        if queue is None or keeper is None:
            missing = (
                "queue= and results="
                if queue is None and keeper is None
                else ("queue=" if queue is None else "results=")
            )
            raise ValueError(
                f"task {name!r} keeps no results to send it for: pass {missing} to @task "
                "(results=True keeps them on the queue's transport)"
            )
        return queue, keeper

    def send(*args: Any, **kwargs: Any) -> ResultHandle[Any]:
        """Trigger the task through its queue; return the handle of its stored result."""
        bus, keep = check()
        return send_task(bus, topic, args, kwargs, results=keep.store, result_ttl=keep.ttl,
                         name=name)  # fmt: skip

    async def send_async(*args: Any, **kwargs: Any) -> ResultHandle[Any]:
        """:meth:`send` without blocking the running event loop."""
        bus, keep = check()
        return await send_task_async(bus, topic, args, kwargs, results=keep.store,
                                     result_ttl=keep.ttl, name=name)  # fmt: skip

    def result(task_id: str) -> ResultHandle[Any]:
        """The handle of the stored result of ``task_id``, sent by this or any process."""
        if keeper is None:
            raise ValueError(f"task {name!r} keeps no results: pass results= to @task")
        return ResultHandle(task_id, keeper.store, task=name)

    return send, send_async, result
