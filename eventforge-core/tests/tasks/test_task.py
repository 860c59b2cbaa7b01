"""@task: one lifecycle for direct calls and queue triggers; callbacks, results, pool, state."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, ClassVar

import pytest
from eventforge import (
    ExecutionMode,
    Executor,
    Message,
    MessageQueue,
    RetryPolicy,
    SharedState,
    TaskPool,
    WorkQueue,
    task,
)
from eventforge.execution import UnpicklableTaskError
from eventforge.observing import CallEvent
from eventforge.tasks import TaskContext, TaskPoolTimeout
from eventforge.transport import Capability
from eventforge.transports.memory import MemoryTransport


class Recorder:
    """A minimal observer: records the hooks it sees, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CallEvent]] = []

    def before(self, event: CallEvent) -> None:
        self.calls.append(("before", event))

    def after(self, event: CallEvent) -> None:
        self.calls.append(("after", event))

    def on_error(self, event: CallEvent) -> None:
        self.calls.append(("on_error", event))

    @property
    def hooks(self) -> list[str]:
        return [hook for hook, _ in self.calls]


class Collect:
    """A queue subscriber collecting messages, with a way to wait for them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.messages) >= count, timeout)


@pytest.fixture
def queue():
    q = MessageQueue()
    yield q
    q.close()


@task(executor=Executor(mode=ExecutionMode.PROCESS, max_workers=1))
def where_am_i(tag: str) -> tuple[str, int]:
    return tag, os.getpid()


@task(executor=Executor(mode=ExecutionMode.PROCESS, max_workers=1))
async def where_am_i_async(tag: str) -> tuple[str, int]:
    await asyncio.sleep(0)
    return tag, os.getpid()


def test_process_executor_runs_an_async_task_in_a_worker_process() -> None:
    tag, pid = asyncio.run(where_am_i_async("y"))
    assert tag == "y"
    assert pid != os.getpid()
    where_am_i_async.executor.stop()


def test_direct_call_returns_value_through_observers_and_callbacks() -> None:
    observer = Recorder()
    seen: list[tuple[str, TaskContext]] = []

    @task(
        on_execute=[observer],
        on_success=lambda ctx: seen.append(("success", ctx)),
        on_failure=lambda ctx: seen.append(("failure", ctx)),
        on_complete=lambda ctx: seen.append(("complete", ctx)),
    )
    def double(x: int, *, extra: int = 0) -> int:
        """Double x."""
        return 2 * x + extra

    assert double(21, extra=1) == 43
    assert observer.hooks == ["before", "after"]
    assert observer.calls[1][1].result == 43
    assert [kind for kind, _ in seen] == ["success", "complete"]
    ctx = seen[0][1]
    assert seen[1][1] is ctx
    assert (ctx.task_name, ctx.args, ctx.kwargs, ctx.result, ctx.error) == (
        "test_direct_call_returns_value_through_observers_and_callbacks.<locals>.double",
        (21,),
        {"extra": 1},
        43,
        None,
    )
    assert ctx.trigger == "call"
    assert ctx.message is None
    assert ctx.attempt is None
    assert ctx.execution_time >= 0
    assert ctx.state is double.state
    assert double.__name__ == "double"
    assert double.__doc__ == "Double x."
    assert double.__eventforge_task__ is True


def test_direct_call_reraises_after_on_failure_and_on_complete() -> None:
    observer = Recorder()
    order: list[str] = []
    contexts: list[TaskContext] = []

    def on_failure(ctx: TaskContext) -> None:
        order.append("failure")
        contexts.append(ctx)

    @task(
        on_execute=[observer],
        on_success=lambda ctx: order.append("success"),
        on_failure=on_failure,
        on_complete=lambda ctx: order.append("complete"),
    )
    def broken(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError) as info:
        broken(5)
    assert order == ["failure", "complete"]
    assert contexts[0].error is info.value
    assert contexts[0].result is None
    assert observer.hooks == ["before", "on_error"]


def test_callbacks_accept_lists_and_a_raising_callback_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def bad(ctx: TaskContext) -> None:
        raise RuntimeError("callback bug")

    @task(on_success=[bad, lambda ctx: calls.append("second")])
    def one() -> int:
        return 1

    with caplog.at_level(logging.ERROR, logger="eventforge.tasks"):
        assert one() == 1
    assert calls == ["second"]
    assert "callback bug" in caplog.text


def test_queue_trigger_runs_the_same_lifecycle(queue: MessageQueue) -> None:
    observer = Recorder()
    contexts: list[TaskContext] = []

    @task(queue=queue, topic="jobs.upper", on_execute=[observer], on_complete=contexts.append)
    def upper(text: str) -> str:
        return text.upper()

    message_id = queue.publish("jobs.upper", "world")
    assert len(contexts) == 1  # memory transport: delivered in the publisher's thread
    ctx = contexts[0]
    assert (ctx.trigger, ctx.result, ctx.args, ctx.attempt) == ("queue", "WORLD", ("world",), 1)
    assert ctx.message is not None
    assert ctx.message.id == message_id
    assert observer.hooks == ["before", "after"]


def test_topic_defaults_to_the_function_name(queue: MessageQueue) -> None:
    got: list[Any] = []

    @task(queue=queue, on_success=lambda ctx: got.append(ctx.result))
    def shout(text: str) -> str:
        return text + "!"

    assert shout.topic == "shout"
    queue.publish("shout", "hey")
    assert got == ["hey!"]


def test_payload_is_one_argument_and_publish_unpacks_arguments(queue: MessageQueue) -> None:
    received: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @task(queue=queue, topic="calc", on_complete=lambda c: received.append((c.args, c.kwargs)))
    def calc(*args: Any, **kwargs: Any) -> int:
        return 0

    queue.publish("calc", {"a": 1})
    queue.publish("calc", [1, 2])
    calc.publish(1, 2, scale=3)
    assert received == [
        (({"a": 1},), {}),
        (([1, 2],), {}),
        ((1, 2), {"scale": 3}),
    ]


def test_publish_result_topics(queue: MessageQueue) -> None:
    successes, failures = Collect(), Collect()
    queue.subscribe("risky.success", successes)
    queue.subscribe("risky.failure", failures)

    @task(queue=queue, topic="risky")
    def risky(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 10

    assert risky(1) == 10
    queue.publish("risky", 2)
    with pytest.raises(ValueError):
        risky(-1)
    queue.publish("risky", -2)
    assert successes.wait(2)
    assert failures.wait(2)
    assert [m.payload for m in successes.messages] == [10, 20]
    assert failures.messages[0].payload == {
        "task": "test_publish_result_topics.<locals>.risky",
        "error_type": "ValueError",
        "error": "negative",
    }
    assert failures.messages[0].headers["task"].endswith("risky")
    assert "source_id" in failures.messages[1].headers


def test_publish_result_false_publishes_nothing(queue: MessageQueue) -> None:
    anything = Collect()
    queue.subscribe("quiet.*", anything)

    @task(queue=queue, topic="quiet", publish_result=False)
    def quiet() -> int:
        return 1

    assert quiet() == 1
    queue.publish("quiet", None)
    assert anything.messages == []


def test_thread_executor_runs_the_body_on_a_pool_thread() -> None:
    with Executor(mode=ExecutionMode.THREAD, max_workers=2) as executor:

        @task(executor=executor)
        def which_thread() -> str:
            return threading.current_thread().name

        assert which_thread().startswith("eventforge-executor")


def test_process_executor_runs_a_module_level_task_in_a_worker_process() -> None:
    tag, pid = where_am_i("x")
    assert tag == "x"
    assert pid != os.getpid()
    assert where_am_i.executor is not None
    where_am_i.executor.stop()


def test_process_executor_refuses_a_nested_task_at_decoration() -> None:
    with pytest.raises(UnpicklableTaskError, match="module level"):

        @task(executor=Executor(mode=ExecutionMode.PROCESS))
        def nested() -> None:
            pass


def test_executor_errors_are_reraised_from_a_direct_call() -> None:
    with Executor(mode=ExecutionMode.THREAD) as executor:

        @task(executor=executor)
        def fails() -> None:
            raise ZeroDivisionError("in a thread")

        with pytest.raises(ZeroDivisionError, match="in a thread"):
            fails()


def test_max_instances_never_exceeded_under_threads() -> None:
    lock = threading.Lock()
    active = peak = 0
    release = threading.Event()

    @task(max_instances=2)
    def limited() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        release.wait(10)
        with lock:
            active -= 1

    assert limited.pool is not None
    threads = [threading.Thread(target=limited) for _ in range(8)]
    for t in threads:
        t.start()
    stats_ok = False
    for _ in range(2000):
        stats = limited.pool.stats
        if stats["active"] == 2 and stats["waiting"] == 6:
            stats_ok = True
            break
        threading.Event().wait(0.005)
    release.set()
    for t in threads:
        t.join(10)
    assert stats_ok
    assert peak == 2
    assert limited.pool.stats == {
        "max_instances": 2,
        "active": 0,
        "waiting": 0,
        "completed": 8,
        "rejected": 0,
        "peak": 2,
    }


def test_instance_timeout_fails_clearly_through_on_failure() -> None:
    release = threading.Event()
    entered = threading.Event()
    failures: list[TaskContext] = []

    @task(max_instances=1, instance_timeout=0.05, on_failure=failures.append)
    def single() -> str:
        entered.set()
        release.wait(10)
        return "done"

    holder = threading.Thread(target=single)
    holder.start()
    assert entered.wait(10)
    with pytest.raises(TaskPoolTimeout, match="max_instances=1") as info:
        single()
    release.set()
    holder.join(10)
    assert failures[0].error is info.value
    assert single.pool.stats["rejected"] == 1
    assert single.pool.stats["completed"] == 1


def test_state_increments_are_never_lost_across_threads() -> None:
    @task()
    def count() -> None:
        count.state.increment("calls")
        count.state.compute("evens", lambda v: v + 1, default=0)

    def hammer() -> None:
        for _ in range(500):
            count()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count.state["calls"] == 4000
    assert count.state["evens"] == 4000


def test_shared_state_behaves_like_a_dict() -> None:
    state = SharedState({"a": 1})
    state["b"] = 2
    state.update({"c": 3}, d=4)
    assert state.setdefault("a", 99) == 1
    assert sorted(state) == ["a", "b", "c", "d"]
    assert len(state) == 4
    assert "c" in state
    assert state.pop("d") == 4
    del state["c"]
    with state.locked() as data:
        data["a"] += 10
    assert state.to_dict() == {"a": 11, "b": 2}
    assert state.items() == [("a", 11), ("b", 2)]
    assert state.get("zzz", "dflt") == "dflt"
    state.clear()
    assert state.keys() == []


def test_task_pool_refuses_bad_settings_and_double_release() -> None:
    with pytest.raises(ValueError, match="max_instances"):
        TaskPool(0)
    pool = TaskPool(1)
    with pool.slot():
        assert pool.stats["active"] == 1
    with pytest.raises(RuntimeError, match="released more often"):
        pool.release()


# -- async tasks ---------------------------------------------------------------------------------


def test_async_task_direct_call_returns_a_coroutine() -> None:
    observer = Recorder()
    order: list[str] = []

    @task(
        on_execute=[observer],
        on_success=lambda ctx: order.append(f"success:{ctx.result}"),
        on_failure=lambda ctx: order.append(f"failure:{ctx.error}"),
        on_complete=lambda ctx: order.append("complete"),
    )
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError("neg")
        return x + 1

    async def main() -> None:
        pending = fetch(1)
        assert asyncio.iscoroutine(pending)
        assert await pending == 2
        with pytest.raises(ValueError, match="neg"):
            await fetch(-1)

    asyncio.run(main())
    assert order == ["success:2", "complete", "failure:neg", "complete"]
    assert observer.hooks == ["before", "after", "before", "on_error"]
    assert fetch.__eventforge_task__ is True


def test_async_task_through_an_executor() -> None:
    with Executor(mode=ExecutionMode.THREAD) as executor:

        @task(executor=executor)
        async def in_thread() -> str:
            return threading.current_thread().name

        assert asyncio.run(in_thread()).startswith("eventforge-executor")


def test_async_task_is_triggered_by_the_queue(queue: MessageQueue) -> None:
    done = threading.Event()
    contexts: list[TaskContext] = []

    def finished(ctx: TaskContext) -> None:
        contexts.append(ctx)
        done.set()

    @task(queue=queue, topic="async.job", on_complete=finished)
    async def job(payload: dict[str, int]) -> int:
        await asyncio.sleep(0)
        return payload["n"] * 3

    results = Collect()
    queue.subscribe("async.job.success", results)
    queue.publish("async.job", {"n": 4})
    assert done.wait(10)
    assert contexts[0].trigger == "queue"
    assert contexts[0].result == 12
    assert results.wait(1)
    assert results.messages[0].payload == 12


class _LoopGatedTransport(MemoryTransport):
    """A network-like transport: sending ``*.success`` needs the event loop to make progress."""

    capabilities: ClassVar[frozenset[str]] = MemoryTransport.capabilities - {Capability.ZERO_COPY}

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def send(self, message: Message) -> None:
        if message.topic.endswith(".success") and not self.gate.wait(5):
            raise TimeoutError("the send waited for the event loop, which was blocked")
        super().send(message)


def test_async_task_publishes_its_result_off_the_running_loop() -> None:
    transport = _LoopGatedTransport()
    with MessageQueue(transport) as queue:
        outcomes = queue.cache("double.success")

        @task(queue=queue, topic="double")
        async def double(x: int) -> int:
            return x * 2

        async def main() -> int:
            asyncio.get_running_loop().call_soon(transport.gate.set)
            return int(await double(21))

        assert asyncio.run(main()) == 42
        published = outcomes.get(timeout=5)
        assert published is not None, "the outcome was not published"
        assert published.payload == 42


def test_async_max_instances_limits_concurrent_coroutines() -> None:
    active = peak = 0

    @task(max_instances=2)
    async def limited() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(5):
            await asyncio.sleep(0)
        active -= 1

    async def main() -> None:
        await asyncio.gather(*(limited() for _ in range(6)))

    asyncio.run(main())
    assert peak == 2
    assert limited.pool.stats["completed"] == 6
    assert limited.pool.stats["waiting"] == 0


def test_async_instance_timeout() -> None:
    @task(max_instances=1, instance_timeout=0.02)
    async def slow() -> None:
        await asyncio.sleep(0.5)

    async def main() -> None:
        first = asyncio.create_task(slow())
        await asyncio.sleep(0)
        with pytest.raises(TaskPoolTimeout):
            await slow()
        first.cancel()

    asyncio.run(main())
    assert slow.pool.stats["rejected"] == 1


def test_a_task_run_again_for_a_retried_work_item_sees_attempt_two(queue: MessageQueue) -> None:
    """A work item carries its attempt number in its message; the task the item triggers reads
    it: 1 on the run that failed, 2 on the run after the queue retried the item."""
    contexts: list[TaskContext] = []

    @task(queue=queue, topic="jobs.resize", on_complete=contexts.append)
    def resize(size: int) -> int:
        if not contexts:
            raise ValueError("the first run fails")
        return size * 2

    def run_task(message: Message) -> None:
        queue.publish("jobs.resize", message.payload, **message.headers)
        if contexts[-1].error is not None:
            raise contexts[-1].error  # the item is retried when the task failed

    policy = RetryPolicy(max_attempts=3, initial_backoff=0, jitter=0)
    with WorkQueue("resize", retry=policy) as jobs:
        jobs.put(21)
        assert jobs.process(run_task, max_items=2, timeout=1) == 2
        assert (jobs.stats["retried"], jobs.stats["acked"]) == (1, 1)
    assert [(ctx.trigger, ctx.attempt, ctx.result) for ctx in contexts] == [
        ("queue", 1, None),
        ("queue", 2, 42),
    ]
